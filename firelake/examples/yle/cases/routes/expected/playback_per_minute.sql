SELECT strftime(event_time, '%Y-%m-%dT%H:%M') AS minute, count(*) AS n
FROM playback GROUP BY 1 ORDER BY 1
