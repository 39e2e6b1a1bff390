-- description: Plays by device and platform per hour of one day
-- param: day date = today  Day to count, UTC (YYYY-MM-DD or today)
-- chart: line hour plays device
SELECT hour, device, platform, count(*) AS plays
FROM playback
WHERE event_type = 'start' AND dt = $day
GROUP BY ALL
ORDER BY hour, plays DESC, device, platform
