"""Lua scripts: every multi-key change of the buffer runs as one atomic script in Redis.

A script either applies all its writes or none (Redis runs it alone and logs it to the AOF as one
transaction), so a buffer killed mid-call never leaves a group put without its prompt acked.
The status codes scripts return are the IntEnums below; each script starts with them as Lua locals.
"""

from __future__ import annotations

from enum import IntEnum


class EnqueueStatus(IntEnum):
    OK = 0
    DUPLICATE = 1  # the cursor is already past this call's range: a retried call
    CURSOR_MISMATCH = 2
    BACKLOG_FULL = 3


class PutStatus(IntEnum):
    STORED = 0
    DUPLICATE = 1  # same group_id as an earlier put: its entry id is returned
    CLAIM_NOT_PENDING = 2  # the claim was completed by another attempt or dead-lettered
    WRONG_PROMPT = 3  # the claim is for another prompt (entry_id = its prompt id)
    ATTEMPT_TOO_HIGH = 4  # attempt above the claim's deliveries (entry_id = deliveries)


def _with_statuses(status: type[IntEnum], body: str) -> str:
    """`body` preceded by one Lua local per status (`local DUPLICATE = 1`)."""
    return "".join(f"local {m.name} = {m.value}\n" for m in status) + body


# KEYS: cursor, prompts stream. ARGV: cursor_start, cursor_end, max_backlog, prompt_id, payload, ...
# Returns {EnqueueStatus, cursor, backlog, enqueued}.
ENQUEUE = _with_statuses(EnqueueStatus, """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local backlog = redis.call('XLEN', KEYS[2])
local s = tonumber(ARGV[1])
local e = tonumber(ARGV[2])
if cur >= e then return {DUPLICATE, cur, backlog, 0} end
if cur ~= s then return {CURSOR_MISMATCH, cur, backlog, 0} end
local n = (#ARGV - 3) / 2
if backlog + n > tonumber(ARGV[3]) then return {BACKLOG_FULL, cur, backlog, 0} end
for i = 4, #ARGV, 2 do
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[i], 'p', ARGV[i + 1])
end
redis.call('SET', KEYS[1], ARGV[2])
return {OK, e, backlog + n, n}
""")

# KEYS: prompts, attempts hash, releases hash, released set, dead stream, stats hash.
# ARGV: group, consumer, min_idle_ms, count, max_attempts.
# Reclaims expired (or released) claims for `consumer`; a prompt whose leases expired max_attempts
# times goes to the dead-letter stream instead. Returns a flat list {id, payload, attempt, ...}.
RECLAIM = """
local out = {}
local got = 0
local want = tonumber(ARGV[4])
local max_attempts = tonumber(ARGV[5])
local start = '0-0'
for iter = 1, 8 do
  local res = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], start, 'COUNT', want - got)
  start = res[1]
  for _, e in ipairs(res[2]) do
    local id = e[1]
    local f = e[2]
    local payload = f[4]
    local delivered = tonumber(redis.call('HGET', KEYS[2], id) or '0')
    local releases = tonumber(redis.call('HGET', KEYS[3], id) or '0')
    local was_released = redis.call('SREM', KEYS[4], id) == 1
    if not was_released and delivered - releases >= max_attempts then
      redis.call('XADD', KEYS[5], '*', 'id', f[2], 'p', payload, 'claim_id', id, 'attempts', delivered)
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
      redis.call('HDEL', KEYS[2], id)
      redis.call('HDEL', KEYS[3], id)
      redis.call('HINCRBY', KEYS[6], 'prompts_dead_lettered_total', 1)
    else
      if not was_released then redis.call('HINCRBY', KEYS[6], 'prompts_reclaimed_total', 1) end
      local attempt = redis.call('HINCRBY', KEYS[2], id, 1)
      table.insert(out, id)
      table.insert(out, payload)
      table.insert(out, attempt)
      got = got + 1
    end
  end
  if start == '0-0' or got >= want then break end
end
return out
"""

# KEYS: prompts, releases hash, released set. ARGV: group, consumer, idle_ms, claim_id, ...
# Makes the consumer's own claims reclaimable at once (idle time set past the lease).
RELEASE = """
local n = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if #p == 1 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', ARGV[3], 'JUSTID')
    redis.call('HINCRBY', KEYS[2], id, 1)
    redis.call('SADD', KEYS[3], id)
    n = n + 1
  end
end
return n
"""

# KEYS: groups stream, group ids hash, prompts stream, attempts hash, releases hash, released set, stats.
# ARGV: group_id, payload, claim_id, prompts group, prompt_id, policy_version, mean accuracy, attempt.
# Returns {entry_id, PutStatus}.
PUT = _with_statuses(PutStatus, """
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then
  redis.call('HINCRBY', KEYS[7], 'groups_duplicate_total', 1)
  return {existing, DUPLICATE}
end
local claim = ARGV[3]
if #redis.call('XPENDING', KEYS[3], ARGV[4], claim, claim, 1) == 0 then return {'', CLAIM_NOT_PENDING} end
local entry = redis.call('XRANGE', KEYS[3], claim, claim)
if #entry == 1 and entry[1][2][2] ~= ARGV[5] then return {entry[1][2][2], WRONG_PROMPT} end
local delivered = tonumber(redis.call('HGET', KEYS[4], claim) or '0')
if tonumber(ARGV[8]) > delivered then return {tostring(delivered), ATTEMPT_TOO_HIGH} end
local id = redis.call('XADD', KEYS[1], '*', 'g', ARGV[2], 'v', ARGV[6], 'a', ARGV[7])
redis.call('HSET', KEYS[2], ARGV[1], id)
redis.call('XACK', KEYS[3], ARGV[4], claim)
redis.call('XDEL', KEYS[3], claim)
redis.call('HDEL', KEYS[4], claim)
redis.call('HDEL', KEYS[5], claim)
redis.call('SREM', KEYS[6], claim)
redis.call('HINCRBY', KEYS[7], 'groups_put_total', 1)
return {id, STORED}
""")

# KEYS: groups stream, stats[, dropped hash]. ARGV: group, counter field, entry_id, ...
# Acks and deletes entries (learner ack, or a drop by the filter / staleness bound) and counts them;
# a drop also records entry id -> counter in the dropped hash, so every put group stays accounted for.
ACK = """
local n = 0
for i = 3, #ARGV do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    if KEYS[3] then redis.call('HSET', KEYS[3], ARGV[i], ARGV[2]) end
    n = n + 1
  end
end
if n > 0 then redis.call('HINCRBY', KEYS[2], ARGV[2], n) end
return n
"""
