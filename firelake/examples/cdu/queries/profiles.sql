-- description: Student profiles from the lake: XP, challenges solved, XP per language (a challenge counts once, for its first passing submission)
-- view: true
WITH first_pass AS (
    SELECT student_id, challenge_id,
           arg_min(language, (submitted_at, submission_id)) AS language,
           any_value(xp) AS xp
    FROM (SELECT DISTINCT ON (submission_id) * FROM results)
    WHERE passed
    GROUP BY student_id, challenge_id
)
SELECT student_id, language, sum(xp) AS xp, count(*) AS challenges_solved
FROM first_pass
GROUP BY GROUPING SETS ((student_id), (student_id, language))
