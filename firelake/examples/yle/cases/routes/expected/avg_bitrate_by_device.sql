SELECT device, avg(bitrate_kbps) AS avg_kbps FROM playback GROUP BY 1
