SELECT event_type, count(*) AS n FROM playback GROUP BY 1
