-- description: Top students by XP, overall or in one language; the same ranking as GET /v1/cdu/leaderboard
-- param: language string = all  A language, or all for the overall board
-- param: top int = 10  How many students
-- chart: bar student_id xp
SELECT row_number() OVER (ORDER BY xp DESC, student_id) AS rank, student_id, xp
FROM profiles
WHERE (CASE WHEN $language = 'all' THEN language IS NULL ELSE language = $language END)
  AND xp > 0
ORDER BY xp DESC, student_id
LIMIT $top
