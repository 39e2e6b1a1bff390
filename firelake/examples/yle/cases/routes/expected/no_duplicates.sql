SELECT count(*) - count(DISTINCT event_id) AS duplicates FROM playback
