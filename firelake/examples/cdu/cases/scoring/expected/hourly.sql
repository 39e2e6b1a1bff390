SELECT strftime(window_start, '%Y-%m-%dT%H:%M') AS hour, challenge_id, language,
       submissions, passed
FROM hourly_results
WHERE is_final AND window_end <= TIMESTAMPTZ '2026-12-01T11:00:00+00:00'
