-- renew: extend the leases of many rooms of one node in one call.
-- KEYS[i]   owner key of room i (roomlb:room:{r})
-- ARGV[1] node id, ARGV[2] lease ms, ARGV[2+i] the epoch the node holds room i at
-- Returns a flat list {i, current owner value ('' when unowned), ...} of the
-- rooms the node no longer owns at that epoch; those are left untouched.
local lost = {}
local node = ARGV[1]
local lease = ARGV[2]
for i, key in ipairs(KEYS) do
  local want = node .. ':' .. ARGV[2 + i]
  local cur = redis.call('GET', key)
  if cur == want then
    redis.call('PEXPIRE', key, lease)
  else
    lost[#lost + 1] = i
    lost[#lost + 1] = cur or ''
  end
end
return lost
