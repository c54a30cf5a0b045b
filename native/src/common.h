// Shared helpers of the kTLS addon: argument checks and the one way a failed
// syscall reaches JavaScript (a NativeSyscallError built by the loader's class).
#pragma once

#include <napi.h>

namespace ktls {

class Hub;

// Per-environment state (napi_set_instance_data): the JS error class the loader
// registered, so every failure is a real `NativeSyscallError` instance, and the
// environment's epoll hub (hub.h), created on first use.
struct AddonData {
  ~AddonData();
  Napi::FunctionReference errorClass;
  Napi::FunctionReference pollerCtor;
  Napi::FunctionReference pumpCtor;
  Hub* hub = nullptr;
};

// Throws (as a pending JS exception) a NativeSyscallError for `err` from `syscall`.
// `detail` is a fixed, key-free explanation (e.g. which length was wrong) or nullptr.
void ThrowErrno(Napi::Env env, int err, const char* syscall, const char* detail = nullptr);

// A Buffer (any ArrayBufferView) argument read with one napi_get_buffer_info: for the
// per-record calls, where node-addon-api's Buffer wrapper (a type check, then a typed-array
// lookup) cost more than the work. Read() is false, with no exception pending, for anything
// that is not a view; the caller throws its own TypeError.
struct BufferArg {
  uint8_t* data = nullptr;
  size_t length = 0;
  bool Read(napi_env env, napi_value v) {
    void* p = nullptr;
    if (napi_get_buffer_info(env, v, &p, &length) != napi_ok) return false;
    data = static_cast<uint8_t*>(p);
    return true;
  }
};

// Reads a file descriptor argument: an integer in [0, INT32_MAX]. Throws a TypeError and
// returns false otherwise (a negative fd would otherwise become EBADF, hiding a caller bug).
bool GetFd(const Napi::CallbackInfo& info, size_t index, int* fd);

// The NativeSyscallError for `err` from `syscall`, as a value (for callbacks' arguments).
Napi::Value ErrnoValue(Napi::Env env, int err, const char* syscall);

// `new ctor(...info's arguments)`: the create* factories of the addon's classes (poller, pump),
// whose constructors are kept per environment in AddonData.
Napi::Value Construct(const Napi::FunctionReference& ctor, const Napi::CallbackInfo& info);

Napi::Object InitPoller(Napi::Env env, Napi::Object exports, AddonData* data);
Napi::Object InitSplice(Napi::Env env, Napi::Object exports, AddonData* data);
Napi::Object InitAead(Napi::Env env, Napi::Object exports);

}  // namespace ktls
