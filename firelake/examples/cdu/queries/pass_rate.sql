-- description: Pass rate per challenge and language
-- chart: bar challenge_id pass_rate language
SELECT challenge_id, language, count(*) AS submissions, count(*) FILTER (WHERE passed) AS passed,
       round(count(*) FILTER (WHERE passed) / count(*), 3) AS pass_rate
FROM (SELECT DISTINCT ON (submission_id) * FROM results)
GROUP BY challenge_id, language
ORDER BY challenge_id, language
