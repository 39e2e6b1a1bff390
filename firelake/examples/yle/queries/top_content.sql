-- description: Top content by plays on one day (a play is a 'start' event)
-- param: day date = today  Day to rank, UTC (YYYY-MM-DD or today)
-- param: top int = 10  How many titles
-- chart: bar content_id plays
SELECT content_id, any_value(content_type) AS content_type, count(*) AS plays,
       count(DISTINCT user_id) AS viewers
FROM playback
WHERE event_type = 'start' AND dt = $day
GROUP BY content_id
ORDER BY plays DESC, content_id
LIMIT $top
