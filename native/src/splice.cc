// The splice pump: moves bytes from one socket to another through a pipe with splice(2),
// in the kernel, readiness-driven by the environment's epoll hub (hub.h). No policy: how
// many bytes (a budget, or until EOF) and when is the caller's; every failure ends the run
// with the errno and the failed call.
//
// State of a run:
//   reading_   still reading `from` (false after EOF, the budget, stop() or a read error)
//   inPipe_    bytes spliced from `from` into the pipe and not yet into `to` (exact count)
// Readiness wanted (re-armed after every step):
//   EPOLLIN|EPOLLRDHUP on `from`  while reading_ and the pipe is empty, edge-triggered where the
//                                 fd's other watchers allow (Trigger::kEdge): found in the lab,
//                                 6.1 reports EPOLLIN while kTLS RX holds only part of a record
//                                 (splice says EAGAIN); level-triggered, the pump would spin
//                                 until the rest arrived. The edge comes when the record is whole.
//   EPOLLOUT on `to`              while the pipe holds bytes
// Both are waited on only after EAGAIN; a step that stops at the per-wakeup cap defers itself
// to the next loop iteration instead of relying on the level.
// With bytes in the pipe the pump never waits on `from`: an EAGAIN reading a socket into a
// non-empty pipe can mean "pipe full" as well as "socket empty", and waiting on a readable
// socket while the pipe is full would spin. So backpressure is: `to` answers EAGAIN, the
// pipe stays non-empty, nothing reads `from` until EPOLLOUT lets the pipe drain.
//
// The pipe (2 fds) is held only while bytes are in flight: taken from the environment's pool
// (hub.h) before a read into it, given back when the pump goes to wait on `from` with the
// pipe empty, and at the end of a run. An idle pump, even one with a run waiting for bytes
// (tcp mode keeps a run open per direction for the connection's life), costs no fd: an idle
// spliced connection holds its two sockets and nothing else. A pipe with bytes stays with
// its pump until they are flushed (or lost with `to`: then it is closed, never pooled).
//
// Never copies through userspace: if splice cannot do it, the run ends with the error.
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cstdint>

#include "common.h"
#include "hub.h"

namespace ktls {
namespace {

// Bytes read from `from` per pump per wakeup: a fast pair cannot starve the event loop; the
// pump comes back at the next loop iteration (Defer).
constexpr size_t kStepBytes = 256 * 1024;
// And at most this many reads per wakeup, however small each one is (a peer trickling single
// bytes, or two pumps bouncing bytes between each other, must not hold the loop either).
constexpr int kStepReads = 64;
constexpr unsigned kSpliceFlags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE;
// Largest budget JS can express exactly (Number.MAX_SAFE_INTEGER).
constexpr double kMaxBudget = 9007199254740991.0;

enum class End { kBudget, kEof, kStopped, kError };

const char* EndName(End e) {
  switch (e) {
    case End::kBudget: return "budget";
    case End::kEof: return "eof";
    case End::kStopped: return "stopped";
    case End::kError: return "error";
  }
  return "error";
}

class SplicePump;

// The pump watches two fds; each registration reports to the pump.
struct Side : public HubClient {
  SplicePump* pump = nullptr;
  void OnEvents(uint32_t events) override;
  void OnHubError(int err, const char* syscall) override;
  void OnDeferred() override;
};

class SplicePump : public Napi::ObjectWrap<SplicePump> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SplicePump",
                       {InstanceMethod<&SplicePump::Start>("start"), InstanceMethod<&SplicePump::Stop>("stop"),
                        InstanceMethod<&SplicePump::Moved>("moved"), InstanceMethod<&SplicePump::Close>("close")});
  }

  explicit SplicePump(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SplicePump>(info) {
    Napi::Env env = info.Env();
    if (!GetFd(info, 0, &from_) || !GetFd(info, 1, &to_)) return;
    if (info.Length() < 3 || !info[2].IsFunction()) {
      Napi::TypeError::New(env, "onDone must be a function").ThrowAsJavaScriptException();
      return;
    }
    int err = 0;
    const char* syscall = "epoll_ctl";
    Hub* hub = Hub::Get(env, &err, &syscall);
    if (hub == nullptr) {
      ThrowErrno(env, err, syscall);
      return;
    }
    hub_ = hub;
    fromSide_.pump = this;
    toSide_.pump = this;
    // Both fds are registered (parked) now, so a bad fd fails here, synchronously.
    if ((inW_ = hub_->Add(from_, &fromSide_, &err)) == nullptr ||
        (outW_ = hub_->Add(to_, &toSide_, &err)) == nullptr) {
      Release();
      ThrowErrno(env, err, "epoll_ctl");
      return;
    }
    callback_ = Napi::Persistent(info[2].As<Napi::Function>());
    context_ = new Napi::AsyncContext(env, "ktls_sidecar.SplicePump");
  }

  ~SplicePump() override {
    active_ = false;  // finalized: the reference is going away with the object, no Unref
    Release();
    delete context_;
  }

  // A readiness event on either fd, or the deferred first step of a run.
  void Step() {
    if (!running_) return;
    if (armErr_ != 0) {
      Finish(End::kError, armErr_, "epoll_ctl");
      return;
    }
    size_t readNow = 0;
    int reads = 0;
    for (;;) {
      if (inPipe_ > 0) {
        ssize_t n = splice(pipe_[0], nullptr, to_, nullptr, inPipe_, kSpliceFlags);
        if (n > 0) {
          inPipe_ -= static_cast<size_t>(n);
          moved_ += static_cast<uint64_t>(n);
          continue;  // empty the pipe, or learn that `to` is full (EAGAIN)
        }
        if (n < 0 && errno == EINTR) continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
          // `to` is dead: the pipe's bytes are lost with it. JS kills the connection.
          Finish(End::kError, n == 0 ? EPIPE : errno, "splice_out");
          return;
        }
        // `to` is full: fall through and fill the pipe while `from` has bytes.
      }
      if (!reading_ || readNow >= kStepBytes || reads >= kStepReads) break;
      if (pipe_[0] < 0) {
        int err = hub_->TakePipe(pipe_);
        if (err != 0) {
          pipe_[0] = pipe_[1] = -1;
          Finish(End::kError, err, "pipe2");  // nothing was read: nothing is lost
          return;
        }
      }
      reads++;
      size_t want = kStepBytes - readNow;
      if (hasBudget_ && budgetLeft_ < want) want = static_cast<size_t>(budgetLeft_);
      ssize_t n = splice(from_, nullptr, pipe_[1], nullptr, want, kSpliceFlags);
      if (n > 0) {
        inPipe_ += static_cast<size_t>(n);
        readNow += static_cast<size_t>(n);
        if (hasBudget_) {
          budgetLeft_ -= static_cast<uint64_t>(n);
          if (budgetLeft_ == 0) EndReading(End::kBudget);
        }
        continue;
      }
      if (n == 0) {
        EndReading(End::kEof);  // flush what is in the pipe, then end 'eof'
        continue;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;  // socket empty (or pipe full: see top)
      // A read error (a kTLS control record: EINVAL, a KeyUpdate pending: EKEYEXPIRED, a reset):
      // the bytes already in the pipe precede it, so they go to `to` first.
      readErr_ = errno;
      EndReading(End::kError);
    }
    // Stopped at the cap with `from` maybe still readable: an edge-triggered wait would not
    // come back for it, so come back on the next loop iteration (the pipe is kept for it).
    bool capped = reading_ && (readNow >= kStepBytes || reads >= kStepReads);
    if (capped) hub_->Defer(inW_);
    // Empty and about to wait for `from` (or to end): the pipe goes back to the pool.
    if (inPipe_ == 0 && !capped) ReturnPipe();
    if (!reading_ && inPipe_ == 0) {
      if (end_ == End::kError)
        Finish(End::kError, readErr_, "splice_in");
      else
        Finish(end_, 0, nullptr);
      return;
    }
    int rc = Rearm();
    if (rc != 0) Finish(End::kError, rc, "epoll_ctl");
  }

  void HubFailed(int err, const char* syscall) {
    if (running_) Finish(End::kError, err, syscall);
  }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (inW_ == nullptr) {
      Napi::Error::New(env, "splice pump is closed").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (running_) {
      Napi::Error::New(env, "splice pump: a run is already active").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    double budget = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    if (!(budget >= 0 && budget <= kMaxBudget && budget == static_cast<double>(static_cast<uint64_t>(budget)))) {
      Napi::TypeError::New(env, "budget must be a non-negative safe integer (0 = until EOF)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    hasBudget_ = budget > 0;
    budgetLeft_ = static_cast<uint64_t>(budget);
    moved_ = 0;
    readErr_ = 0;
    armErr_ = 0;
    end_ = End::kEof;
    reading_ = true;
    running_ = true;
    if (!active_) {
      Ref();  // the JS object must live until onDone
      active_ = true;
    }
    // First step on the next loop iteration: onDone never runs inside start(), and bytes
    // already queued in `from` move without waiting for a new readiness event.
    hub_->Defer(inW_);
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (running_ && reading_) {
      EndReading(End::kStopped);
      // Nothing left to flush: end on the next iteration (never inside stop()); else the
      // armed EPOLLOUT ends the run once the pipe is empty.
      if (inPipe_ == 0) {
        hub_->Arm(inW_, 0);
        hub_->Defer(inW_);
      } else {
        int rc = Rearm();
        if (rc != 0) {
          armErr_ = rc;
          hub_->Defer(inW_);
        }
      }
    }
    return info.Env().Undefined();
  }

  Napi::Value Moved(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), static_cast<double>(moved_));
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Release();
    return info.Env().Undefined();
  }

  void EndReading(End why) {
    reading_ = false;
    end_ = why;
  }

  // Level-triggered interest for the current state (see the top of the file).
  int Rearm() {
    uint32_t in = reading_ && inPipe_ == 0 ? static_cast<uint32_t>(EPOLLIN | EPOLLRDHUP) : 0u;
    uint32_t out = inPipe_ > 0 ? static_cast<uint32_t>(EPOLLOUT) : 0u;
    int rc = hub_->Arm(inW_, in, Trigger::kEdge);
    if (rc == 0) rc = hub_->Arm(outW_, out, Trigger::kEither);
    return rc;
  }

  void Finish(End end, int err, const char* syscall) {
    running_ = false;
    reading_ = false;
    hub_->Arm(inW_, 0);
    hub_->Arm(outW_, 0);
    ReturnPipe();  // a pipe that still holds bytes (`to` failed) is closed, not pooled
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (!CanCallIntoJs(env)) return;  // env teardown: the run just ends, nobody to tell
    Napi::Object result = Napi::Object::New(env);
    result.Set("bytes", Napi::Number::New(env, static_cast<double>(moved_)));
    result.Set("end", Napi::String::New(env, EndName(end)));
    result.Set("error", end == End::kError ? ErrnoValue(env, err, syscall) : env.Null());
    Napi::Value self = Value();  // keeps the object alive through the callback
    if (active_) {
      active_ = false;
      Unref();
    }
    // onDone may start the next run or close the pump: nothing of `this` is used after it.
    callback_.MakeCallback(self, {result}, *context_);
    if (env.IsExceptionPending()) {
      // The JS callback threw: report it like any uncaught exception, never swallow it.
      napi_value e = env.GetAndClearPendingException().Value();
      napi_fatal_exception(env, e);
    }
  }

  // Hub::GivePipe pools the pipe only if FIONREAD says it is empty; otherwise it is closed.
  void ReturnPipe() {
    if (pipe_[0] < 0) return;
    hub_->GivePipe(pipe_);
    inPipe_ = 0;
  }

  // Pipe and registrations go now; an active run ends without a callback. Idempotent.
  void Release() {
    running_ = false;
    reading_ = false;
    if (hub_ != nullptr) {
      ReturnPipe();  // before the watchers: the hub may delete itself once the last one is gone
      if (inW_ != nullptr) hub_->Remove(inW_);
      if (outW_ != nullptr) hub_->Remove(outW_);
      inW_ = outW_ = nullptr;
      hub_ = nullptr;
    }
    if (active_) {
      active_ = false;
      Unref();
    }
  }

  Hub* hub_ = nullptr;
  Side fromSide_;
  Side toSide_;
  Watcher* inW_ = nullptr;
  Watcher* outW_ = nullptr;
  int from_ = -1;
  int to_ = -1;
  int pipe_[2] = {-1, -1};
  size_t inPipe_ = 0;
  uint64_t moved_ = 0;
  uint64_t budgetLeft_ = 0;
  bool hasBudget_ = false;
  bool running_ = false;
  bool reading_ = false;
  bool active_ = false;
  End end_ = End::kEof;
  int readErr_ = 0;
  int armErr_ = 0;
  Napi::FunctionReference callback_;
  Napi::AsyncContext* context_ = nullptr;
};

void Side::OnEvents(uint32_t events) { pump->Step(); }
void Side::OnHubError(int err, const char* syscall) { pump->HubFailed(err, syscall); }
void Side::OnDeferred() { pump->Step(); }

Napi::Value CreateSplicePump(const Napi::CallbackInfo& info) {
  return Construct(info.Env().GetInstanceData<AddonData>()->pumpCtor, info);
}

// Empty pipes the environment keeps for reuse (fd accounting in tests and diagnostics).
Napi::Value SplicePipesIdle(const Napi::CallbackInfo& info) {
  AddonData* data = info.Env().GetInstanceData<AddonData>();
  return Napi::Number::New(info.Env(), data->hub != nullptr ? static_cast<double>(data->hub->IdlePipes()) : 0);
}

}  // namespace

Napi::Object InitSplice(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function ctor = SplicePump::Define(env);
  data->pumpCtor = Napi::Persistent(ctor);
  exports.Set("SplicePump", ctor);
  exports.Set("createSplicePump", Napi::Function::New(env, CreateSplicePump, "createSplicePump"));
  exports.Set("splicePipesIdle", Napi::Function::New(env, SplicePipesIdle, "splicePipesIdle"));
  return exports;
}

}  // namespace ktls
