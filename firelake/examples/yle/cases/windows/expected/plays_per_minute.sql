SELECT strftime(window_start, '%Y-%m-%dT%H:%M') AS minute, content_id, plays, viewers
FROM plays_per_minute
WHERE is_final AND window_end <= TIMESTAMPTZ '2026-11-29T20:19:00+00:00'
