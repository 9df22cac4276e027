-- birth: give a hash slot its first mark, before its bit is set in the
-- fleet's slot bitmap (see admit.lua); a mark already there stays.
-- KEYS[1] the slot's mark key roomlb:slot:N:{t}
-- ARGV[1] a new mark
-- Returns 1 when the mark was set, 0 when the slot had one.
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  return 1
end
return 0
