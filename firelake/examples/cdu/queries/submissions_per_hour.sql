-- description: Submissions per hour, with how many passed and how many the sandbox stopped
-- chart: line hour_start submissions
SELECT date_trunc('hour', submitted_at) AS hour_start, count(*) AS submissions,
       count(*) FILTER (WHERE passed) AS passed,
       count(*) FILTER (WHERE reason LIKE '%limit exceeded%' OR reason LIKE 'sandbox violation%')
           AS stopped_by_sandbox
FROM (SELECT DISTINCT ON (submission_id) * FROM results)
GROUP BY hour_start
ORDER BY hour_start
