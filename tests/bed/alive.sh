# Sourced by the bed's scripts: `alive PID` - whether PID is a live process.
# `kill -0` also succeeds on a zombie, and this machine's init may reap
# orphans late: a coordinator killed with -9 can linger as a zombie for
# seconds, holding nothing, but looking alive.
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
