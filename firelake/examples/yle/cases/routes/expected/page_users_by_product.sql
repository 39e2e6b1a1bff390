SELECT product, count(DISTINCT user_id) AS users FROM page GROUP BY 1 ORDER BY 1
