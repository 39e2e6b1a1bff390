-- description: The most common mistakes: failing tests per challenge, most frequent first
-- param: top int = 20  How many rows
-- chart: bar failing_test failures challenge_id
SELECT challenge_id, failing_test, count(*) AS failures,
       any_value(failure_message) FILTER (WHERE first_failed_test = failing_test)
           AS example_message
FROM (SELECT challenge_id, unnest(failed_tests) AS failing_test, first_failed_test,
             failure_message
      FROM (SELECT DISTINCT ON (submission_id) * FROM results)
      WHERE NOT passed AND reason LIKE '%tests failed')
GROUP BY challenge_id, failing_test
ORDER BY failures DESC, challenge_id, failing_test
LIMIT $top
