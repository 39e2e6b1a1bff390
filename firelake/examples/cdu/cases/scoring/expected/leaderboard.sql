WITH first_pass AS (
    SELECT student_id, challenge_id, any_value(xp) AS xp,
           arg_min(language, (submitted_at, submission_id)) AS language
    FROM results WHERE passed GROUP BY student_id, challenge_id)
SELECT student_id, sum(xp) AS xp FROM first_pass
GROUP BY student_id ORDER BY xp DESC, student_id LIMIT 10
