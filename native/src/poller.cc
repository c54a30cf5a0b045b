// Readiness of a socket for reading, outside libuv's own handle for it.
//
// libuv refuses (UV_EEXIST) a second uv_poll on an fd its loop already watches, and a
// second epoll registration of the same fd number would clash with Node's. A dup() is a
// different fd number for the same open file description: epoll keys on (fd, file), so
// both registrations coexist. The dup keeps the socket alive, so close() must be called
// (the record layer does so when the connection ends); a GC'd poller closes itself.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <uv.h>

#include "common.h"

namespace ktls {
namespace {

class Poller;

// Lives until uv_close() has finished, which may be after the JS object is gone.
struct PollState {
  uv_poll_t handle;
  int fd = -1;
  Poller* owner = nullptr;
};

class Poller : public Napi::ObjectWrap<Poller> {
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
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      ThrowErrno(env, EINVAL, "napi_get_uv_event_loop");
      return;
    }
    int dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dupfd < 0) {
      ThrowErrno(env, errno, "dup");
      return;
    }
    state_ = new PollState();
    state_->fd = dupfd;
    state_->owner = this;
    int rc = uv_poll_init(loop, &state_->handle, dupfd);
    if (rc != 0) {
      close(dupfd);
      delete state_;
      state_ = nullptr;
      ThrowErrno(env, -rc, "uv_poll_init");
      return;
    }
    state_->handle.data = state_;
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    context_ = new Napi::AsyncContext(env, "ktls_sidecar.Poller");
  }

  ~Poller() override {
    CloseHandle();
    delete context_;
  }

 private:
  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (state_ == nullptr) {
      ThrowErrno(env, EBADF, "uv_poll_start");
      return env.Undefined();
    }
    int rc = uv_poll_start(&state_->handle, UV_READABLE | UV_DISCONNECT, OnPoll);
    if (rc != 0) {
      ThrowErrno(env, -rc, "uv_poll_start");
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
    CloseHandle();
    return info.Env().Undefined();
  }

  void StopPolling() {
    if (state_ != nullptr) uv_poll_stop(&state_->handle);
    if (active_) {
      active_ = false;
      Unref();
    }
  }

  void CloseHandle() {
    if (state_ == nullptr) return;
    state_->owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&state_->handle), [](uv_handle_t* h) {
      PollState* s = static_cast<PollState*>(h->data);
      if (s->fd >= 0) close(s->fd);
      delete s;
    });
    state_ = nullptr;
  }

  static void OnPoll(uv_poll_t* handle, int status, int events) {
    PollState* s = static_cast<PollState*>(handle->data);
    if (s == nullptr || s->owner == nullptr) return;
    s->owner->Deliver(status);
  }

  void Deliver(int status) {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Napi::Value arg = env.Null();
    if (status < 0) {
      ThrowErrno(env, -status, "uv_poll");
      // Take the error back out of the pending slot: it is the callback's argument.
      arg = env.GetAndClearPendingException().Value();
    }
    callback_.MakeCallback(Value(), {arg}, *context_);
    if (env.IsExceptionPending()) {
      // The JS callback threw: report it like any uncaught exception, never swallow it.
      napi_value err = env.GetAndClearPendingException().Value();
      napi_fatal_exception(env, err);
    }
  }

  PollState* state_ = nullptr;
  Napi::FunctionReference callback_;
  Napi::AsyncContext* context_ = nullptr;
  bool active_ = false;
};

Napi::Value CreatePoller(const Napi::CallbackInfo& info) {
  AddonData* data = info.Env().GetInstanceData<AddonData>();
  std::vector<napi_value> args;
  for (size_t i = 0; i < info.Length(); i++) args.push_back(info[i]);
  return data->pollerCtor.New(args);
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
