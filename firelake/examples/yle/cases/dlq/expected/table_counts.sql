SELECT 'playback' AS tbl, count(*) AS n FROM playback
UNION ALL SELECT 'page', count(*) FROM page
UNION ALL SELECT 'dlq', count(*) FROM dlq
