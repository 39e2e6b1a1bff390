SELECT epoch_ms(min(receive_time)) AS first_ms,
       epoch_ms(max(receive_time)) AS last_ms
FROM playback
