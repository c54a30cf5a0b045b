// AEAD opening of TLS records for a direction the kernel does not hold (kTLS `tx`: the
// client's records are decrypted in JS). Node's createDecipheriv builds a new OpenSSL
// context per call (cipher fetch, key schedule, a JS object): on this path that was one per
// record, some 25 us per 100-byte record on the dev host. Here one EVP_CIPHER_CTX per key is
// kept and each record only sets its nonce. No policy and no record format: the caller gives
// nonce, additional data and ciphertext||tag (proxy/tls/record-protection.ts builds them).
//
// OpenSSL is Node's own (its exported symbols, its headers in include/node/openssl). AES-GCM
// and ChaCha20-Poly1305 only: CCM must know the lengths before the key (a different call
// order) and is rare enough to keep the JS path.
//
// Key material: copied into the OpenSSL context only (the JS Buffer is the caller's); the
// context is freed (and cleansed by OpenSSL) by aeadWipe() or the handle's finalizer; a record
// that does not authenticate leaves no plaintext in `out`. native/index.ts wraps the three
// functions as createAeadOpener().
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <string>

#include "common.h"

namespace ktls {
namespace {

constexpr size_t kNonceBytes = 12;
constexpr size_t kTagBytes = 16;

const EVP_CIPHER* CipherFor(const std::string& name, size_t* keyBytes) {
  if (name == "aes-128-gcm") {
    *keyBytes = 16;
    return EVP_aes_128_gcm();
  }
  if (name == "aes-256-gcm") {
    *keyBytes = 32;
    return EVP_aes_256_gcm();
  }
  if (name == "chacha20-poly1305") {
    *keyBytes = 32;
    return EVP_chacha20_poly1305();
  }
  return nullptr;
}

// One key's context. JS holds it as an External (aeadCreate): the per-record call reads it with
// napi_get_value_external, where an ObjectWrap method's napi_unwrap (a private-symbol property
// lookup) cost about a fifth of a small record's open on the dev host.
struct OpenerState {
  EVP_CIPHER_CTX* ctx = nullptr;
  void Release() {
    if (ctx != nullptr) EVP_CIPHER_CTX_free(ctx);  // frees and cleanses the key schedule
    ctx = nullptr;
  }
};

void FinalizeState(napi_env, void* data, void*) {
  auto* state = static_cast<OpenerState*>(data);
  state->Release();
  delete state;
}

// The handle argument at `index`, or nullptr with a TypeError pending.
OpenerState* StateArg(const Napi::CallbackInfo& info, size_t index) {
  void* p = nullptr;
  if (info.Length() <= index || napi_get_value_external(info.Env(), info[index], &p) != napi_ok || p == nullptr) {
    Napi::TypeError::New(info.Env(), "expected an AEAD opener handle (aeadCreate)").ThrowAsJavaScriptException();
    return nullptr;
  }
  return static_cast<OpenerState*>(p);
}

// aeadCreate(algorithm, key) -> handle
Napi::Value AeadCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsBuffer()) {
    Napi::TypeError::New(env, "createAeadOpener(algorithm: string, key: Buffer)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  size_t keyBytes = 0;
  const EVP_CIPHER* cipher = CipherFor(info[0].As<Napi::String>().Utf8Value(), &keyBytes);
  if (cipher == nullptr) {
    Napi::TypeError::New(env, "createAeadOpener: algorithm must be aes-128-gcm, aes-256-gcm or chacha20-poly1305")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Buffer<uint8_t> key = info[1].As<Napi::Buffer<uint8_t>>();
  if (key.Length() != keyBytes) {
    Napi::TypeError::New(env, "createAeadOpener: the key length does not match the algorithm").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  auto* state = new OpenerState();
  state->ctx = EVP_CIPHER_CTX_new();
  // The default IV length of all three is 12 bytes: the TLS nonce.
  if (state->ctx == nullptr || EVP_DecryptInit_ex(state->ctx, cipher, nullptr, key.Data(), nullptr) != 1) {
    FinalizeState(env, state, nullptr);
    Napi::Error::New(env, "createAeadOpener: OpenSSL could not set up the cipher").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  napi_value handle;
  if (napi_create_external(env, state, FinalizeState, nullptr, &handle) != napi_ok) {
    FinalizeState(env, state, nullptr);
    Napi::Error::New(env, "createAeadOpener: could not create the handle").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Value(env, handle);
}

// aeadOpen(handle, nonce, aad, sealed, out): plaintext bytes written to out, or -1 when the record does not
// authenticate. The per-record path of every JS-opened record (a `tx` connection's requests): its arguments
// are read with one napi_get_buffer_info each rather than node-addon-api's Buffer wrappers (a type check and
// a typed-array lookup per argument), and the nonce and the tag go to OpenSSL in one EVP_DecryptInit_ex2
// instead of an init and a ctrl that OpenSSL 3 turns into parameters again.
Napi::Value AeadOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OpenerState* state = StateArg(info, 0);
  if (state == nullptr) return Napi::Value();
  if (state->ctx == nullptr) {
    Napi::Error::New(env, "AeadOpener: used after wipe()").ThrowAsJavaScriptException();
    return Napi::Value();
  }
  BufferArg nonce, aad, sealed, out;
  if (info.Length() < 5 || !nonce.Read(env, info[1]) || !aad.Read(env, info[2]) || !sealed.Read(env, info[3]) ||
      !out.Read(env, info[4])) {
    Napi::TypeError::New(env, "open(nonce: Buffer, aad: Buffer, sealed: Buffer, out: Buffer)").ThrowAsJavaScriptException();
    return Napi::Value();
  }
  if (nonce.length != kNonceBytes) {
    Napi::TypeError::New(env, "open: the nonce must be 12 bytes").ThrowAsJavaScriptException();
    return Napi::Value();
  }
  if (sealed.length < kTagBytes) return Napi::Number::New(env, -1);
  size_t ctLen = sealed.length - kTagBytes;
  if (out.length < ctLen || ctLen > INT32_MAX || aad.length > INT32_MAX) {
    Napi::TypeError::New(env, "open: out is shorter than the ciphertext").ThrowAsJavaScriptException();
    return Napi::Value();
  }
  // The tag stays in the caller's record: OpenSSL copies it into the context and never writes it.
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, sealed.data + ctLen, kTagBytes),
      OSSL_PARAM_construct_end(),
  };
  EVP_CIPHER_CTX* ctx = state->ctx;
  int n = 0;
  int fin = 0;
  bool ok = EVP_DecryptInit_ex2(ctx, nullptr, nullptr, nonce.data, params) == 1 &&
            (aad.length == 0 || EVP_DecryptUpdate(ctx, nullptr, &n, aad.data, static_cast<int>(aad.length)) == 1) &&
            EVP_DecryptUpdate(ctx, out.data, &n, sealed.data, static_cast<int>(ctLen)) == 1 &&
            EVP_DecryptFinal_ex(ctx, out.data + n, &fin) == 1;
  if (!ok) {
    // GCM and ChaCha20 write plaintext before the tag is checked: none of it may stay.
    OPENSSL_cleanse(out.data, ctLen);
    return Napi::Number::New(env, -1);
  }
  return Napi::Number::New(env, n + fin);
}

// aeadWipe(handle): frees the context now (the handle's finalizer would, later). Idempotent.
Napi::Value AeadWipe(const Napi::CallbackInfo& info) {
  OpenerState* state = StateArg(info, 0);
  if (state != nullptr) state->Release();
  return info.Env().Undefined();
}

}  // namespace

Napi::Object InitAead(Napi::Env env, Napi::Object exports) {
  exports.Set("aeadCreate", Napi::Function::New(env, AeadCreate, "aeadCreate"));
  exports.Set("aeadOpen", Napi::Function::New(env, AeadOpen, "aeadOpen"));
  exports.Set("aeadWipe", Napi::Function::New(env, AeadWipe, "aeadWipe"));
  return exports;
}

}  // namespace ktls
