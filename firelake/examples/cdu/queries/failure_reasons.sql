-- description: Why submissions failed: wrong answers, limits, sandbox violations, errors
-- chart: bar reason submissions
SELECT CASE WHEN reason LIKE 'sandbox violation%' THEN reason
            WHEN reason LIKE '%tests failed' THEN 'wrong answers'
            ELSE reason END AS reason,
       count(*) AS submissions
FROM (SELECT DISTINCT ON (submission_id) * FROM results)
WHERE NOT passed
GROUP BY 1
ORDER BY submissions DESC, reason
