-- description: Every play (a 'start' playback event); a view other queries can name
-- view: true
SELECT * FROM playback WHERE event_type = 'start'
