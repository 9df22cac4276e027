-- drop: housekeeping deletes the value of a room whose owner's session is
-- gone, if it is still that value (the caller checked the session: it is in
-- another hash slot). Nothing else is touched: the epoch counter and the
-- metadata expire on their own.
-- KEYS[1] owner key; ARGV[1] the dead owner value
-- Returns 1 when deleted, 0 when the room has another value now.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
