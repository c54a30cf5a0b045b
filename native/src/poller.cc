// Readiness of a socket for reading, outside libuv's own handle for it.
//
// libuv refuses (UV_EEXIST) a second uv_poll on an fd its loop already watches. The poller
// registers the socket's own fd in the environment's private epoll set instead (hub.h):
// epoll keys on (fd, open file) per epoll set, so this registration and libuv's coexist,
// and a poller costs no file descriptor. close() must be called before the socket is
// closed (the record layer does so when the connection ends); a GC'd poller closes itself.
//
// Level-triggered by default. A callback that returns true says it read until EAGAIN; the
// poller then waits edge-triggered until the next call (found in the lab: 6.1 keeps EPOLLIN
// set while kTLS RX holds only part of a record, and a level-triggered waiter spins on it).
// Events that happen while armed edge-triggered are never lost: a MOD re-polls the fd.
// The callback's second argument says whether the event reported a hang-up or error (EPOLLRDHUP,
// EPOLLHUP, EPOLLERR) too: without one, a plain TCP reader whose recv came back short has read
// all there was, and whatever comes next is a new event (a FIN that was already there is not).
#include <errno.h>
#include <sys/epoll.h>

#include "common.h"
#include "hub.h"

namespace ktls {
namespace {

class Poller : public Napi::ObjectWrap<Poller>, public HubClient {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Poller",
                       {InstanceMethod<&Poller::Start>("start"), InstanceMethod<&Poller::Stop>("stop"),
                        InstanceMethod<&Poller::Close>("close")});
  }

  explicit Poller(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Poller>(info) {
    Napi::Env env = info.Env();
    int fd;
    if (!GetFd(info, 0, &fd)) return;
    if (info.Length() < 2 || !info[1].IsFunction()) {
      Napi::TypeError::New(env, "onReadable must be a function").ThrowAsJavaScriptException();
      return;
    }
    int err = 0;
    const char* syscall = "epoll_ctl";
    Hub* hub = Hub::Get(env, &err, &syscall);
    if (hub == nullptr) {
      ThrowErrno(env, err, syscall);
      return;
    }
    // Registered (parked) now, so a bad fd fails here, synchronously.
    watcher_ = hub->Add(fd, this, &err);
    if (watcher_ == nullptr) {
      ThrowErrno(env, err, "epoll_ctl");
      return;
    }
    hub_ = hub;
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    context_ = new Napi::AsyncContext(env, "ktls_sidecar.Poller");
  }

  ~Poller() override {
    Release();
    delete context_;
  }

  void OnEvents(uint32_t events) override { Deliver(0, nullptr, (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0); }
  void OnHubError(int err, const char* syscall) override { Deliver(err, syscall, false); }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (watcher_ == nullptr) {
      ThrowErrno(env, EBADF, "epoll_ctl");
      return env.Undefined();
    }
    // Readable, or the peer shut down / reset (EPOLLERR and EPOLLHUP come with any mask).
    int rc = hub_->Arm(watcher_, EPOLLIN | EPOLLRDHUP);
    if (rc != 0) {
      ThrowErrno(env, rc, "epoll_ctl");
      return env.Undefined();
    }
    // While polling, the JS object must stay alive for the callback to reach it.
    if (!active_) {
      Ref();
      active_ = true;
    }
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    StopPolling();
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    StopPolling();
    Release();
    return info.Env().Undefined();
  }

  void StopPolling() {
    if (watcher_ != nullptr) hub_->Arm(watcher_, 0);
    if (active_) {
      active_ = false;
      Unref();
    }
  }

  void Release() {
    if (watcher_ == nullptr) return;
    hub_->Remove(watcher_);
    watcher_ = nullptr;
  }

  void Deliver(int err, const char* syscall, bool hangup) {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    if (!CanCallIntoJs(env)) {
      // Env teardown: nobody can be told; stop waking up (a level-triggered fd would spin).
      hub_->Arm(watcher_, 0);
      return;
    }
    Napi::Value arg = err != 0 ? ErrnoValue(env, err, syscall) : env.Null();
    Napi::Value ret = callback_.MakeCallback(Value(), {arg, Napi::Boolean::New(env, hangup)}, *context_);
    if (env.IsExceptionPending()) {
      // The JS callback threw: report it like any uncaught exception, never swallow it.
      napi_value e = env.GetAndClearPendingException().Value();
      napi_fatal_exception(env, e);
      return;
    }
    // Still armed (the callback neither stopped nor closed): `true` means "read until EAGAIN",
    // so wait for the next edge; anything else keeps the level-triggered contract.
    if (watcher_ == nullptr || !active_) return;
    bool drained = !ret.IsEmpty() && ret.IsBoolean() && ret.As<Napi::Boolean>().Value();
    hub_->Arm(watcher_, EPOLLIN | EPOLLRDHUP, drained ? Trigger::kEdge : Trigger::kLevel);
  }

  Hub* hub_ = nullptr;
  Watcher* watcher_ = nullptr;
  Napi::FunctionReference callback_;
  Napi::AsyncContext* context_ = nullptr;
  bool active_ = false;
};

Napi::Value CreatePoller(const Napi::CallbackInfo& info) {
  return Construct(info.Env().GetInstanceData<AddonData>()->pollerCtor, info);
}

}  // namespace

Napi::Object InitPoller(Napi::Env env, Napi::Object exports, AddonData* data) {
  Napi::Function ctor = Poller::Define(env);
  data->pollerCtor = Napi::Persistent(ctor);
  exports.Set("Poller", ctor);
  exports.Set("createPoller", Napi::Function::New(env, CreatePoller, "createPoller"));
  return exports;
}

}  // namespace ktls
