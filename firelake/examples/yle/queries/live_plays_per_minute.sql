-- description: Live plays per minute, from the plays-per-minute window (latest emit of each window, last hour)
-- chart: line window_start plays
WITH latest AS (
    SELECT window_start, content_id,
           arg_max(plays, emit_time) AS plays, arg_max(viewers, emit_time) AS viewers
    FROM plays_per_minute
    WHERE window_start >= (SELECT max(window_start) FROM plays_per_minute) - INTERVAL 60 MINUTE
    GROUP BY window_start, content_id
)
SELECT window_start, sum(plays) AS plays, sum(viewers) AS viewers
FROM latest
GROUP BY window_start
ORDER BY window_start
