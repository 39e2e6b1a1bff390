SELECT event_type, device, count(*) AS n FROM page GROUP BY ALL
