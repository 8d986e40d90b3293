"""Drives a server with pylibmc (libmemcached underneath) over the binary protocol.

Usage: /usr/bin/python3 pylibmc_check.py HOST:PORT
Exits non-zero with a message on the first answer that differs from memcached's.
"""
import sys

import pylibmc


def outcome(call, *args):
    """The call's result, or the name of the pylibmc error it raised (binary misses raise)."""
    try:
        return call(*args)
    except pylibmc.Error as e:
        return type(e).__name__


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


def main():
    server = sys.argv[1]
    mc = pylibmc.Client([server], binary=True, behaviors={"cas": True, "tcp_nodelay": True})

    # set / get, with flags carried by pylibmc's own type encoding
    check("set", mc.set("py:str", "hello"), True)
    check("get", mc.get("py:str"), "hello")
    check("set int", mc.set("py:int", 42), True)
    check("get int", mc.get("py:int"), 42)
    check("get miss", mc.get("py:missing"), None)
    check("set bytes", mc.set("py:bytes", b"\x00\x01\xff" * 1000), True)
    check("get bytes", mc.get("py:bytes"), b"\x00\x01\xff" * 1000)

    # get_multi across many keys (they spread over every shard), with misses mixed in
    keys = [f"py:multi:{i}" for i in range(200)]
    check("set_multi", mc.set_multi({k: k.upper() for k in keys}), [])
    got = mc.get_multi(keys + ["py:nope:1", "py:nope:2"])
    check("get_multi", got, {k: k.upper() for k in keys})

    # add / replace
    check("add existing", outcome(mc.add, "py:str", "x"), False)
    check("add new", mc.add("py:added", "a"), True)
    check("replace missing", outcome(mc.replace, "py:never", "x"), "NotFound")
    check("replace existing", mc.replace("py:added", "b"), True)
    check("get replaced", mc.get("py:added"), "b")

    # cas: a matching token stores, a stale one does not
    value, token = mc.gets("py:str")
    check("gets value", value, "hello")
    if not token:
        sys.exit("gets returned no CAS token")
    check("cas match", mc.cas("py:str", "world", token), True)
    check("cas stale", outcome(mc.cas, "py:str", "again", token), False)
    check("get after cas", mc.get("py:str"), "world")

    # incr / decr
    check("set counter", mc.set("py:ctr", 10), True)
    check("incr", mc.incr("py:ctr", 5), 15)
    check("decr", mc.decr("py:ctr", 20), 0)
    # pylibmc takes a C long delta, so reach the top of u64 from a stored value
    check("set max", mc.set("py:ctr", "18446744073709551615"), True)
    check("incr wraps", mc.incr("py:ctr", 2), 1)
    check("incr miss", outcome(mc.incr, "py:no-counter", 1), "NotFound")

    # touch keeps the item and sets a new expiry
    check("touch hit", mc.touch("py:added", 100), True)
    check("touch miss", outcome(mc.touch, "py:never", 100), False)
    check("get touched", mc.get("py:added"), "b")

    # delete / delete_multi
    check("delete", mc.delete("py:added"), True)
    check("delete miss", outcome(mc.delete, "py:added"), False)
    check("delete_multi", mc.delete_multi(keys[:100]), True)
    got = mc.get_multi(keys)
    check("after delete_multi", sorted(got), sorted(keys[100:]))

    # append / prepend keep the value together
    check("set text", mc.set("py:txt", "mid"), True)
    check("append", mc.append("py:txt", "-end"), True)
    check("prepend", mc.prepend("py:txt", "start-"), True)
    check("get appended", mc.get("py:txt"), "start-mid-end")

    stats = mc.get_stats()
    if not stats or "curr_items" not in stats[0][1]:
        sys.exit(f"stats lacks curr_items: {stats!r}")

    # flush_all empties the cache
    check("flush_all", mc.flush_all(), True)
    check("get after flush", mc.get("py:str"), None)
    print("pylibmc: all checks passed")


if __name__ == "__main__":
    main()
