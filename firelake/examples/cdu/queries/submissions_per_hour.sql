-- description: Submissions per hour, with how many passed and how many hit a sandbox limit
-- chart: line hour submissions
SELECT date_trunc('hour', submitted_at) AS hour, count(*) AS submissions,
       count(*) FILTER (WHERE passed) AS passed,
       count(*) FILTER (WHERE reason LIKE '%limit exceeded%' OR reason LIKE 'sandbox violation%')
           AS stopped_by_sandbox
FROM (SELECT DISTINCT ON (submission_id) * FROM results)
GROUP BY hour
ORDER BY hour
