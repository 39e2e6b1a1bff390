-- description: Dead-lettered events by error type and source stream since a day
-- param: since date = 2000-01-01  First day counted, UTC
-- chart: bar error_type events source_topic
SELECT error_type, source_topic, count(*) AS events, min(failed_at) AS first_seen,
       max(failed_at) AS last_seen, any_value(reason) AS example_reason
FROM dlq
WHERE dt >= $since
GROUP BY error_type, source_topic
ORDER BY events DESC, error_type
