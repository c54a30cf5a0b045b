// The hub: one private epoll set per Node environment (see hub.h for the contract).
#include "hub.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>

#include "common.h"

namespace ktls {

// One kernel registration per fd number, shared by every watcher of that fd.
struct FdEntry {
  int fd = -1;
  uint32_t seq = 0;         // generation: an event for an older entry of the same fd is dropped
  uint32_t registered = 0;  // mask in the kernel set; 0 = parked (EPOLLONESHOT, no events)
  std::vector<Watcher*> watchers;
};

namespace {

constexpr uint32_t kAlways = EPOLLERR | EPOLLHUP;  // the kernel reports these whatever the mask

uint64_t Key(const FdEntry* e) { return (static_cast<uint64_t>(e->seq) << 32) | static_cast<uint32_t>(e->fd); }

int Ctl(int epfd, int op, FdEntry* e, uint32_t mask) {
  struct epoll_event ev;
  ev.events = mask != 0 ? mask : EPOLLONESHOT;
  ev.data.u64 = Key(e);
  return epoll_ctl(epfd, op, e->fd, &ev) == 0 ? 0 : errno;
}

}  // namespace

bool CanCallIntoJs(napi_env env) {
  // napi_strict_equals is one of the calls that refuse (napi_pending_exception) when the
  // environment cannot call into JS or an exception is pending (Node's NAPI_PREAMBLE), and it
  // allocates nothing. This runs before every callback into JS: the probe it replaced (a new
  // object and a named property on it) was 2 % of a kTLS stream's CPU on the dev host.
  napi_value undef;
  bool same = false;
  if (napi_get_undefined(env, &undef) != napi_ok) return false;
  return napi_strict_equals(env, undef, undef, &same) == napi_ok;
}

int Watcher::fd() const { return entry_ != nullptr ? entry_->fd : -1; }

AddonData::~AddonData() {
  if (hub != nullptr) hub->Detach();
}

Hub* Hub::Get(napi_env env, int* err, const char** syscall) {
  AddonData* data = nullptr;
  if (napi_get_instance_data(env, reinterpret_cast<void**>(&data)) != napi_ok || data == nullptr) {
    *err = EINVAL;
    *syscall = "napi_get_instance_data";
    return nullptr;
  }
  if (data->hub != nullptr) return data->hub;
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    *err = EINVAL;
    *syscall = "napi_get_uv_event_loop";
    return nullptr;
  }
  Hub* h = new Hub();
  int rc = h->Init(loop, syscall);
  if (rc != 0) {
    *err = rc;
    h->Shutdown();  // closes what Init opened; deletes itself once the handles are closed
    return nullptr;
  }
  if (napi_add_async_cleanup_hook(env, OnCleanup, h, &h->cleanup_) != napi_ok) {
    *err = EINVAL;
    *syscall = "napi_add_async_cleanup_hook";
    h->Shutdown();
    return nullptr;
  }
  h->data_ = data;
  data->hub = h;
  return h;
}

int Hub::Init(uv_loop_t* loop, const char** syscall) {
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) {
    *syscall = "epoll_create1";
    return errno;
  }
  int rc = uv_poll_init(loop, &poll_, epfd_);
  if (rc != 0) {
    *syscall = "uv_poll_init";
    return -rc;
  }
  openHandles_++;
  poll_.data = this;
  uv_idle_init(loop, &idle_);  // cannot fail on Linux
  openHandles_++;
  idle_.data = this;
  rc = uv_poll_start(&poll_, UV_READABLE, OnPoll);
  if (rc != 0) {
    *syscall = "uv_poll_start";
    return -rc;
  }
  // Idle until a watcher is armed: an unused addon must not keep the process alive.
  uv_unref(reinterpret_cast<uv_handle_t*>(&poll_));
  return 0;
}

Watcher* Hub::Add(int fd, HubClient* client, int* err) {
  if (shutDown_) {
    *err = ESHUTDOWN;
    return nullptr;
  }
  FdEntry* e;
  auto it = entries_.find(fd);
  if (it != entries_.end()) {
    e = it->second;
  } else {
    e = new FdEntry();
    e->fd = fd;
    e->seq = nextSeq_++;
    if (nextSeq_ == 0) nextSeq_ = 1;
    int rc = Ctl(epfd_, EPOLL_CTL_ADD, e, 0);
    if (rc != 0) {
      delete e;
      *err = rc;
      return nullptr;
    }
    entries_.emplace(fd, e);
  }
  Watcher* w = new Watcher();
  w->client_ = client;
  w->entry_ = e;
  e->watchers.push_back(w);
  watchers_++;
  return w;
}

// Brings the kernel registration of `e` to the union of its watchers' masks (one epoll_ctl,
// none if unchanged). ENOENT on MOD: the fd was closed and reused since (the kernel dropped
// the old registration): register again.
int Hub::Apply(FdEntry* e) {
  uint32_t want = 0;
  bool edge = false, level = false;
  for (Watcher* w : e->watchers) {
    want |= w->mask_;
    if (w->mask_ == 0) continue;
    if (w->trigger_ == Trigger::kEdge) edge = true;
    if (w->trigger_ == Trigger::kLevel) level = true;
  }
  // A MOD re-polls the fd: an edge-triggered waiter still gets an event for what is ready now.
  if (want != 0 && edge && !level) want |= EPOLLET;
  if (want == e->registered) return 0;
  int rc = Ctl(epfd_, EPOLL_CTL_MOD, e, want);
  if (rc == ENOENT) rc = Ctl(epfd_, EPOLL_CTL_ADD, e, want);
  if (rc == 0) e->registered = want;
  return rc;
}

void Hub::SetArmed(Watcher* w, uint32_t mask) {
  if (w->mask_ == 0 && mask != 0) armed_++;
  if (w->mask_ != 0 && mask == 0) armed_--;
  w->mask_ = mask;
  if (shutDown_) return;
  // Keep the loop alive exactly while someone waits for an event.
  if (armed_ > 0)
    uv_ref(reinterpret_cast<uv_handle_t*>(&poll_));
  else
    uv_unref(reinterpret_cast<uv_handle_t*>(&poll_));
}

int Hub::Arm(Watcher* w, uint32_t mask, Trigger trigger) {
  if (w->entry_ == nullptr) return mask == 0 ? 0 : ESHUTDOWN;
  if (w->mask_ == mask && w->trigger_ == trigger) return 0;
  uint32_t old = w->mask_;
  Trigger oldTrigger = w->trigger_;
  SetArmed(w, mask);
  w->trigger_ = trigger;
  int rc = Apply(w->entry_);
  if (rc == 0 || mask == 0) return 0;  // parking a closed fd: the kernel already dropped it
  SetArmed(w, old);
  w->trigger_ = oldTrigger;
  Apply(w->entry_);
  return rc;
}

void Hub::Remove(Watcher* w) {
  if (w == nullptr || w->removed_) return;
  if (w->deferred_) {
    deferred_.erase(std::remove(deferred_.begin(), deferred_.end(), w), deferred_.end());
    w->deferred_ = false;
  }
  if (w->mask_ != 0) SetArmed(w, 0);
  FdEntry* e = w->entry_;
  w->entry_ = nullptr;
  if (e != nullptr) {
    e->watchers.erase(std::remove(e->watchers.begin(), e->watchers.end(), w), e->watchers.end());
    if (e->watchers.empty()) {
      // EBADF/ENOENT: the fd was closed first and the kernel dropped the entry itself.
      epoll_ctl(epfd_, EPOLL_CTL_DEL, e->fd, nullptr);
      entries_.erase(e->fd);
      if (dispatching_ > 0)
        deadEntries_.push_back(e);
      else
        delete e;
    } else {
      Apply(e);  // the remaining watchers' union; an error here means the fd is gone
    }
  }
  watchers_--;
  if (dispatching_ > 0) {
    w->removed_ = true;
    deadWatchers_.push_back(w);
  } else {
    delete w;
  }
  MaybeDelete();
}

void Hub::Defer(Watcher* w) {
  if (w->deferred_ || w->removed_ || shutDown_) return;
  w->deferred_ = true;
  deferred_.push_back(w);
  // An active idle handle makes the loop poll without blocking: OnIdle runs next iteration.
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&idle_))) uv_idle_start(&idle_, OnIdle);
}

void Hub::OnIdle(uv_idle_t* handle) { static_cast<Hub*>(handle->data)->RunDeferred(); }

void Hub::RunDeferred() {
  std::vector<Watcher*> batch;
  batch.swap(deferred_);
  uv_idle_stop(&idle_);
  dispatching_++;
  for (Watcher* w : batch) {
    if (w->removed_ || !w->deferred_) continue;
    w->deferred_ = false;
    w->client_->OnDeferred();  // may Defer() again: that lands in the new deferred_ list
  }
  dispatching_--;
  FreeLater();
}

void Hub::OnPoll(uv_poll_t* handle, int status, int events) { static_cast<Hub*>(handle->data)->Dispatch(status); }

void Hub::Dispatch(int status) {
  if (shutDown_) return;
  struct epoll_event evs[kMaxEvents];
  int n = 0;
  int err = 0;
  const char* syscall = "uv_poll";
  if (status < 0) {
    err = -status;
  } else {
    // Non-blocking: libuv told us the set is readable. At most kMaxEvents per wakeup (fairness);
    // level-triggered entries still ready come back at the next loop iteration.
    do {
      n = epoll_wait(epfd_, evs, kMaxEvents, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      err = errno;
      syscall = "epoll_wait";
    }
  }
  dispatching_++;
  if (err != 0) {
    // Every armed watcher learns that waiting failed (no event would ever come).
    std::vector<Watcher*> all;
    for (auto& kv : entries_)
      for (Watcher* w : kv.second->watchers)
        if (w->mask_ != 0) all.push_back(w);
    for (Watcher* w : all)
      if (!w->removed_ && w->mask_ != 0) w->client_->OnHubError(err, syscall);
  }
  std::vector<Watcher*> snap;
  for (int i = 0; i < n; i++) {
    const int fd = static_cast<int>(static_cast<uint32_t>(evs[i].data.u64));
    const uint32_t seq = static_cast<uint32_t>(evs[i].data.u64 >> 32);
    auto it = entries_.find(fd);
    if (it == entries_.end() || it->second->seq != seq) continue;  // removed meanwhile
    // A callback may add or remove watchers of this fd: iterate over a copy.
    snap.assign(it->second->watchers.begin(), it->second->watchers.end());
    for (Watcher* w : snap) {
      if (w->removed_ || w->mask_ == 0) continue;  // parked: a one-shot ERR/HUP, ignored
      uint32_t hit = evs[i].events & (w->mask_ | kAlways);
      if (hit != 0) w->client_->OnEvents(hit);
    }
  }
  dispatching_--;
  FreeLater();
}

void Hub::FreeLater() {
  if (dispatching_ > 0) return;
  for (Watcher* w : deadWatchers_) delete w;
  deadWatchers_.clear();
  for (FdEntry* e : deadEntries_) delete e;
  deadEntries_.clear();
  MaybeDelete();
}

int Hub::TakePipe(int fds[2]) {
  if (pipes_.size() >= 2) {
    fds[1] = pipes_.back();
    pipes_.pop_back();
    fds[0] = pipes_.back();
    pipes_.pop_back();
    return 0;
  }
  if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return errno;
  // Room for a whole step (splice.cc kStepBytes) per splice call instead of the default 16
  // pages: fewer splice calls and wakeups per byte. Best effort: past /proc/sys/fs/pipe-max-size
  // or the user's pipe quota (EPERM) the pipe keeps its default size and works the same.
  (void)fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(kPipeBytes));
  return 0;
}

void Hub::GivePipe(int fds[2]) {
  if (fds[0] < 0) return;
  // Only a pipe that is provably empty is reused: bytes of one connection must never reach another.
  int queued = -1;
  if (!shutDown_ && pipes_.size() / 2 < kMaxIdlePipes && ioctl(fds[0], FIONREAD, &queued) == 0 && queued == 0) {
    pipes_.push_back(fds[0]);
    pipes_.push_back(fds[1]);
  } else {
    close(fds[0]);
    close(fds[1]);
  }
  fds[0] = fds[1] = -1;
}

void Hub::OnCleanup(napi_async_cleanup_hook_handle handle, void* arg) {
  Hub* hub = static_cast<Hub*>(arg);
  hub->cleanupRunning_ = true;
  hub->Shutdown();  // the hook is removed (teardown goes on) once the handles are closed
}

// Env teardown (or a failed Init): close the handles and the epoll fd now; the Hub object
// lives on until the handles' close callbacks ran and every owner removed its watcher.
void Hub::Shutdown() {
  if (shutDown_) return;
  shutDown_ = true;
  if (data_ != nullptr) {
    data_->hub = nullptr;
    data_ = nullptr;
  }
  for (Watcher* w : deferred_) w->deferred_ = false;
  deferred_.clear();
  for (auto& kv : entries_) {
    for (Watcher* w : kv.second->watchers) {
      w->entry_ = nullptr;
      w->mask_ = 0;
    }
    delete kv.second;
  }
  entries_.clear();
  armed_ = 0;
  for (int fd : pipes_) close(fd);
  pipes_.clear();
  auto closed = [](uv_handle_t* h) {
    Hub* hub = static_cast<Hub*>(h->data);
    hub->openHandles_--;
    hub->MaybeDelete();
  };
  // openHandles_ counts initialized handles (poll first, then idle).
  int open = openHandles_;
  if (open >= 1) uv_close(reinterpret_cast<uv_handle_t*>(&poll_), closed);
  if (open >= 2) uv_close(reinterpret_cast<uv_handle_t*>(&idle_), closed);
  if (epfd_ >= 0) {
    close(epfd_);  // after uv_close: libuv has stopped watching it
    epfd_ = -1;
  }
  MaybeDelete();
}

void Hub::MaybeDelete() {
  if (shutDown_ && openHandles_ == 0 && cleanupRunning_) {
    cleanupRunning_ = false;
    napi_async_cleanup_hook_handle h = cleanup_;
    cleanup_ = nullptr;
    napi_remove_async_cleanup_hook(h);
  }
  if (shutDown_ && openHandles_ == 0 && watchers_ == 0 && dispatching_ == 0 && !cleanupRunning_) {
    for (Watcher* w : deadWatchers_) delete w;
    for (FdEntry* e : deadEntries_) delete e;
    delete this;
  }
}

}  // namespace ktls
