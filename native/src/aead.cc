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
// context is freed (and cleansed by OpenSSL) by wipe() or the finalizer; a record that does
// not authenticate leaves no plaintext in `out`.
#include <openssl/crypto.h>
#include <openssl/evp.h>

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

class AeadOpener : public Napi::ObjectWrap<AeadOpener> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "AeadOpener", {
      InstanceMethod<&AeadOpener::Open>("open"),
      InstanceMethod<&AeadOpener::Wipe>("wipe"),
    });
  }

  // new AeadOpener(algorithm, key)
  explicit AeadOpener(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AeadOpener>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsBuffer()) {
      Napi::TypeError::New(env, "createAeadOpener(algorithm: string, key: Buffer)").ThrowAsJavaScriptException();
      return;
    }
    size_t keyBytes = 0;
    const EVP_CIPHER* cipher = CipherFor(info[0].As<Napi::String>().Utf8Value(), &keyBytes);
    if (cipher == nullptr) {
      Napi::TypeError::New(env, "createAeadOpener: algorithm must be aes-128-gcm, aes-256-gcm or chacha20-poly1305")
          .ThrowAsJavaScriptException();
      return;
    }
    Napi::Buffer<uint8_t> key = info[1].As<Napi::Buffer<uint8_t>>();
    if (key.Length() != keyBytes) {
      Napi::TypeError::New(env, "createAeadOpener: the key length does not match the algorithm").ThrowAsJavaScriptException();
      return;
    }
    ctx_ = EVP_CIPHER_CTX_new();
    // The default IV length of all three is 12 bytes: the TLS nonce.
    if (ctx_ == nullptr || EVP_DecryptInit_ex(ctx_, cipher, nullptr, key.Data(), nullptr) != 1) {
      Release();
      Napi::Error::New(env, "createAeadOpener: OpenSSL could not set up the cipher").ThrowAsJavaScriptException();
    }
  }

  ~AeadOpener() override { Release(); }

 private:
  // open(nonce, aad, sealed, out): plaintext bytes written to out, or -1 when the record does not authenticate.
  Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (ctx_ == nullptr) {
      Napi::Error::New(env, "AeadOpener: used after wipe()").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (info.Length() < 4 || !info[0].IsBuffer() || !info[1].IsBuffer() || !info[2].IsBuffer() || !info[3].IsBuffer()) {
      Napi::TypeError::New(env, "open(nonce: Buffer, aad: Buffer, sealed: Buffer, out: Buffer)").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto nonce = info[0].As<Napi::Buffer<uint8_t>>();
    auto aad = info[1].As<Napi::Buffer<uint8_t>>();
    auto sealed = info[2].As<Napi::Buffer<uint8_t>>();
    auto out = info[3].As<Napi::Buffer<uint8_t>>();
    if (nonce.Length() != kNonceBytes) {
      Napi::TypeError::New(env, "open: the nonce must be 12 bytes").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (sealed.Length() < kTagBytes) return Napi::Number::New(env, -1);
    size_t ctLen = sealed.Length() - kTagBytes;
    if (out.Length() < ctLen || ctLen > INT32_MAX || aad.Length() > INT32_MAX) {
      Napi::TypeError::New(env, "open: out is shorter than the ciphertext").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    uint8_t* tag = sealed.Data() + ctLen;
    int n = 0;
    int fin = 0;
    bool ok = EVP_DecryptInit_ex(ctx_, nullptr, nullptr, nullptr, nonce.Data()) == 1 &&
              EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_SET_TAG, static_cast<int>(kTagBytes), tag) == 1 &&
              (aad.Length() == 0 || EVP_DecryptUpdate(ctx_, nullptr, &n, aad.Data(), static_cast<int>(aad.Length())) == 1) &&
              EVP_DecryptUpdate(ctx_, out.Data(), &n, sealed.Data(), static_cast<int>(ctLen)) == 1 &&
              EVP_DecryptFinal_ex(ctx_, out.Data() + n, &fin) == 1;
    if (!ok) {
      // GCM and ChaCha20 write plaintext before the tag is checked: none of it may stay.
      OPENSSL_cleanse(out.Data(), ctLen);
      return Napi::Number::New(env, -1);
    }
    return Napi::Number::New(env, n + fin);
  }

  Napi::Value Wipe(const Napi::CallbackInfo& info) {
    Release();
    return info.Env().Undefined();
  }

  void Release() {
    if (ctx_ != nullptr) EVP_CIPHER_CTX_free(ctx_);  // frees and cleanses the key schedule
    ctx_ = nullptr;
  }

  EVP_CIPHER_CTX* ctx_ = nullptr;
};

Napi::Value CreateAeadOpener(const Napi::CallbackInfo& info) {
  return Construct(info.Env().GetInstanceData<AddonData>()->aeadCtor, info);
}

}  // namespace

Napi::Object InitAead(Napi::Env env, Napi::Object exports, AddonData* data) {
  data->aeadCtor = Napi::Persistent(AeadOpener::Define(env));
  exports.Set("createAeadOpener", Napi::Function::New(env, CreateAeadOpener, "createAeadOpener"));
  return exports;
}

}  // namespace ktls
