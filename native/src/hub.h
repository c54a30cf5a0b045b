// One private epoll set per addon instance (per Node environment), watched by ONE uv_poll
// on the libuv loop. Every native watcher (Poller, SplicePump) registers the ORIGINAL socket
// fd here: epoll keys on (fd, open file), so this set coexists with libuv's own registration
// of the same fd in libuv's epoll set, and no dup() (no extra fd) is needed.
//
// Contract for every user of the hub:
// - A watcher must be removed (Remove) BEFORE JavaScript closes its socket. If the fd was
//   already closed, the kernel dropped the epoll entry by itself when the file was released;
//   a DEL that then fails with EBADF/ENOENT is not an error. (A registration that outlives its
//   socket could otherwise be woken by the next socket that reuses the fd number.)
// - Several watchers may share one fd (a pump reading a socket another pump writes to, a
//   Poller on the same socket): the hub keeps one kernel entry per fd number with the union
//   of the armed masks, and hands each watcher only the events it asked for (plus ERR/HUP).
// - Level-triggered. A watcher that is armed must consume its readiness or disarm, or the
//   event comes back at the next wakeup. Each wakeup handles at most kMaxEvents ready fds,
//   so one busy fd cannot starve the loop; the rest come back at the next loop iteration.
// - A parked (disarmed) entry stays in the kernel set as EPOLLONESHOT with no events: the
//   kernel still reports ERR/HUP on it once, then disarms it; the hub ignores that event.
#pragma once

#include <napi.h>
#include <stdint.h>
#include <uv.h>

#include <unordered_map>
#include <vector>

namespace ktls {

class Watcher;
struct AddonData;

// Who receives a watcher's events. Called on the event loop, from the hub's uv_poll (or
// idle) callback, never from inside a call into the hub.
class HubClient {
 public:
  // `events`: the ready bits the watcher asked for, plus EPOLLERR/EPOLLHUP.
  virtual void OnEvents(uint32_t events) = 0;
  // Waiting itself failed (uv_poll status or epoll_wait): `err` is an errno, `syscall` names it.
  virtual void OnHubError(int err, const char* syscall) = 0;
  // A Defer()red call has come (next loop iteration).
  virtual void OnDeferred() {}

 protected:
  ~HubClient() = default;
};

struct FdEntry;

// How a watcher wants to be woken. The kernel entry of an fd is edge-triggered (EPOLLET) only
// while some armed watcher asks for kEdge and none needs kLevel.
enum class Trigger {
  kLevel,   // level-triggered only (the Poller: JS may leave data unread and expects a new call)
  kEither,  // waits only after EAGAIN, so an edge is enough
  kEdge,    // prefers edges: kTLS RX on 6.1 reports EPOLLIN for a partial record, which a
            // level-triggered waiter would spin on until the record completes
};

class Watcher {
 public:
  HubClient* client() const { return client_; }
  int fd() const;

 private:
  friend class Hub;
  HubClient* client_ = nullptr;
  FdEntry* entry_ = nullptr;
  uint32_t mask_ = 0;      // armed interest; 0 = parked
  Trigger trigger_ = Trigger::kLevel;
  bool removed_ = false;   // removed while the hub was dispatching: freed afterwards
  bool deferred_ = false;  // in the hub's deferred queue
};

// False while the environment cannot run JavaScript (teardown): then no callback may be made
// and no JS value thrown (node-addon-api turns a failed napi_throw into a fatal error).
bool CanCallIntoJs(napi_env env);

class Hub {
 public:
  // The environment's hub, created on first use (epoll_create1 + uv_poll + uv_idle).
  // On failure returns nullptr with *err = errno and *syscall = the failed call.
  static Hub* Get(napi_env env, int* err, const char** syscall);

  // Registers fd, parked. nullptr + *err (epoll_ctl errno) on failure.
  Watcher* Add(int fd, HubClient* client, int* err);
  // Arms (mask != 0: EPOLLIN/EPOLLOUT/EPOLLRDHUP bits) or parks (0). Returns 0 or the
  // epoll_ctl errno. Parking never fails from the caller's point of view. A kEdge/kEither
  // watcher must consume readiness until EAGAIN (or Defer itself) before it waits again.
  int Arm(Watcher* w, uint32_t mask, Trigger trigger = Trigger::kLevel);
  // Removes and frees the watcher (freed later when called during a dispatch). Never fails.
  void Remove(Watcher* w);
  // Calls w->client()->OnDeferred() on the next loop iteration (once, however often called
  // before it runs). Remove() cancels it.
  void Defer(Watcher* w);

  // Empty pipes kept for reuse by splice pumps (bounded): TakePipe returns 0 or the pipe2
  // errno; GivePipe pools the pipe if it is provably empty, else closes it.
  int TakePipe(int fds[2]);
  void GivePipe(int fds[2]);
  size_t IdlePipes() const { return pipes_.size() / 2; }
  static constexpr size_t kMaxIdlePipes = 64;
  // Capacity asked for each new pipe (F_SETPIPE_SZ, best effort).
  static constexpr size_t kPipeBytes = 256 * 1024;

  // AddonData is going away (env teardown): forget it.
  void Detach() { data_ = nullptr; }

 private:
  Hub() = default;
  ~Hub() = default;
  int Init(uv_loop_t* loop, const char** syscall);
  int Apply(FdEntry* e);
  void SetArmed(Watcher* w, uint32_t mask);
  void Dispatch(int status);
  void RunDeferred();
  void FreeLater();
  void Shutdown();
  void MaybeDelete();
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnIdle(uv_idle_t* handle);
  static void OnCleanup(napi_async_cleanup_hook_handle handle, void* arg);

  static constexpr int kMaxEvents = 64;

  AddonData* data_ = nullptr;
  // Env teardown waits (async cleanup hook) until our handles are closed: a worker's loop runs
  // their close callbacks before the addon can be unloaded with the worker's environment.
  napi_async_cleanup_hook_handle cleanup_ = nullptr;
  bool cleanupRunning_ = false;
  uint32_t nextSeq_ = 1;   // generation of fd entries (high half of epoll_event.data.u64)
  int epfd_ = -1;
  uv_poll_t poll_;
  uv_idle_t idle_;
  int openHandles_ = 0;    // uv handles not yet through their close callback
  size_t armed_ = 0;       // watchers with a non-zero mask: the uv_poll is ref'd while > 0
  size_t watchers_ = 0;    // live watchers (a shut-down hub is deleted when 0)
  int dispatching_ = 0;    // >0 while calling clients: removals are deferred
  bool shutDown_ = false;
  std::unordered_map<int, FdEntry*> entries_;
  std::vector<Watcher*> deferred_;
  std::vector<Watcher*> deadWatchers_;
  std::vector<FdEntry*> deadEntries_;
  std::vector<int> pipes_;  // pairs: read end, write end
};

}  // namespace ktls
