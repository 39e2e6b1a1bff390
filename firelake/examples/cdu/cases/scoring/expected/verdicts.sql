SELECT DISTINCT submission_id, student_id, challenge_id, passed FROM results
