// kTLS syscalls for ktls-sidecar, and nothing else: no policy, no TLS logic.
//
// Every call is non-blocking (MSG_DONTWAIT), every failure becomes a
// NativeSyscallError (errno name + number + syscall), and key material is wiped
// from both the caller's Buffers and our stack copy once setsockopt() returned,
// whatever the outcome.
#include <errno.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common.h"

// Older uapi headers lack some names; the numbers are ABI and never change
// (include/uapi/linux/tls.h). A kernel that does not know an option answers
// ENOPROTOOPT at run time, which the caller sees as "unsupported".
#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif
#ifndef TLS_TX_ZEROCOPY_RO
#define TLS_TX_ZEROCOPY_RO 3
#define KTLS_HEADER_HAS_ZEROCOPY_RO false
#else
#define KTLS_HEADER_HAS_ZEROCOPY_RO true
#endif
#ifndef TLS_RX_EXPECT_NO_PAD
#define TLS_RX_EXPECT_NO_PAD 4
#define KTLS_HEADER_HAS_NO_PAD false
#else
#define KTLS_HEADER_HAS_NO_PAD true
#endif

namespace ktls {
namespace {

// One buffer big enough for every crypto-info struct we build or read back.
union CryptoInfoUnion {
  struct tls_crypto_info info;
  struct tls12_crypto_info_aes_gcm_128 gcm128;
  struct tls12_crypto_info_aes_gcm_256 gcm256;
  struct tls12_crypto_info_aes_ccm_128 ccm128;
  struct tls12_crypto_info_chacha20_poly1305 chacha;
};

struct CipherName {
  const char* name;
  uint16_t type;
};
constexpr CipherName kCiphers[] = {
    {"AES_GCM_128", TLS_CIPHER_AES_GCM_128},
    {"AES_GCM_256", TLS_CIPHER_AES_GCM_256},
    {"CHACHA20_POLY1305", TLS_CIPHER_CHACHA20_POLY1305},
    {"AES_CCM_128", TLS_CIPHER_AES_CCM_128},
};

void Wipe(void* p, size_t n) {
  if (n > 0) explicit_bzero(p, n);
}

// Wipes the bytes of a Buffer argument in place (the caller's key copy).
void WipeBufferProp(const Napi::Object& obj, const char* name) {
  Napi::Value v = obj.Get(name);
  if (v.IsBuffer()) {
    Napi::Buffer<uint8_t> b = v.As<Napi::Buffer<uint8_t>>();
    Wipe(b.Data(), b.Length());
  }
}

bool GetDirection(const Napi::CallbackInfo& info, size_t index, int* optname) {
  if (info.Length() > index && info[index].IsString()) {
    std::string d = info[index].As<Napi::String>().Utf8Value();
    if (d == "tx") {
      *optname = TLS_TX;
      return true;
    }
    if (d == "rx") {
      *optname = TLS_RX;
      return true;
    }
  }
  Napi::TypeError::New(info.Env(), "direction must be 'tx' or 'rx'").ThrowAsJavaScriptException();
  return false;
}

bool GetBuffer(const Napi::CallbackInfo& info, size_t index, BufferArg* out) {
  if (info.Length() > index && out->Read(info.Env(), info[index])) return true;
  Napi::TypeError::New(info.Env(), "expected a Buffer").ThrowAsJavaScriptException();
  return false;
}

bool GetOption(const Napi::CallbackInfo& info, size_t index, int* optname, const char** label) {
  if (info.Length() > index && info[index].IsString()) {
    std::string o = info[index].As<Napi::String>().Utf8Value();
    if (o == "TLS_TX_ZEROCOPY_RO") {
      *optname = TLS_TX_ZEROCOPY_RO;
      *label = "TLS_TX_ZEROCOPY_RO";
      return true;
    }
    if (o == "TLS_RX_EXPECT_NO_PAD") {
      *optname = TLS_RX_EXPECT_NO_PAD;
      *label = "TLS_RX_EXPECT_NO_PAD";
      return true;
    }
  }
  Napi::TypeError::New(info.Env(), "option must be 'TLS_TX_ZEROCOPY_RO' or 'TLS_RX_EXPECT_NO_PAD'")
      .ThrowAsJavaScriptException();
  return false;
}

// Copies key/iv/salt/rec_seq into one concrete struct after checking every length
// against the header's array sizes (so the layout is the kernel's, not ours).
template <typename T>
const char* FillCrypto(T* ci, const Napi::Buffer<uint8_t>& key, const Napi::Buffer<uint8_t>& iv,
                       const Napi::Buffer<uint8_t>& salt, uint64_t seq) {
  if (key.Length() != sizeof(ci->key)) return "key has the wrong length for this cipher";
  if (iv.Length() != sizeof(ci->iv)) return "iv has the wrong length for this cipher";
  if (salt.Length() != sizeof(ci->salt)) return "salt has the wrong length for this cipher";
  memcpy(ci->key, key.Data(), sizeof(ci->key));
  memcpy(ci->iv, iv.Data(), sizeof(ci->iv));
  if (sizeof(ci->salt) > 0) memcpy(ci->salt, salt.Data(), sizeof(ci->salt));
  for (size_t i = 0; i < sizeof(ci->rec_seq); i++)  // network byte order
    ci->rec_seq[i] = static_cast<unsigned char>(seq >> (8 * (sizeof(ci->rec_seq) - 1 - i)));
  return nullptr;
}

template <typename T>
uint64_t ReadSeq(const T* ci) {
  uint64_t seq = 0;
  for (size_t i = 0; i < sizeof(ci->rec_seq); i++) seq = (seq << 8) | ci->rec_seq[i];
  return seq;
}

Napi::Value AttachUlp(const Napi::CallbackInfo& info) {
  int fd;
  if (!GetFd(info, 0, &fd)) return info.Env().Undefined();
  if (setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) != 0)
    ThrowErrno(info.Env(), errno, "setsockopt(TCP_ULP)");
  return info.Env().Undefined();
}

// setCryptoInfo(fd, dir, {version, cipher, key, iv, salt, recSeq})
Napi::Value SetCryptoInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // Wipe the caller's secrets on every path out of this function, success or not.
  Napi::Object obj;
  bool haveObj = info.Length() > 2 && info[2].IsObject();
  if (haveObj) obj = info[2].As<Napi::Object>();
  auto wipeCaller = [&]() {
    if (!haveObj) return;
    WipeBufferProp(obj, "key");
    WipeBufferProp(obj, "iv");
    WipeBufferProp(obj, "salt");
  };

  int fd, optname;
  if (!GetFd(info, 0, &fd) || !GetDirection(info, 1, &optname)) {
    wipeCaller();
    return env.Undefined();
  }
  const char* syscall = optname == TLS_TX ? "setsockopt(TLS_TX)" : "setsockopt(TLS_RX)";
  if (!haveObj) {
    Napi::TypeError::New(env, "crypto info must be an object").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Value vVersion = obj.Get("version"), vCipher = obj.Get("cipher"), vKey = obj.Get("key"),
              vIv = obj.Get("iv"), vSalt = obj.Get("salt"), vSeq = obj.Get("recSeq");
  if (!vVersion.IsString() || !vCipher.IsString() || !vKey.IsBuffer() || !vIv.IsBuffer() ||
      !vSalt.IsBuffer() || !vSeq.IsBigInt()) {
    wipeCaller();
    Napi::TypeError::New(env, "crypto info needs version, cipher (strings), key, iv, salt (Buffers), recSeq (bigint)")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  std::string version = vVersion.As<Napi::String>().Utf8Value();
  std::string cipher = vCipher.As<Napi::String>().Utf8Value();
  bool lossless = false;
  uint64_t seq = vSeq.As<Napi::BigInt>().Uint64Value(&lossless);
  auto key = vKey.As<Napi::Buffer<uint8_t>>(), iv = vIv.As<Napi::Buffer<uint8_t>>(),
       salt = vSalt.As<Napi::Buffer<uint8_t>>();

  CryptoInfoUnion u;
  memset(&u, 0, sizeof(u));
  const char* bad = nullptr;
  socklen_t len = 0;
  if (version == "TLSv1.2") {
    u.info.version = TLS_1_2_VERSION;
  } else if (version == "TLSv1.3") {
    u.info.version = TLS_1_3_VERSION;
  } else {
    bad = "version must be TLSv1.2 or TLSv1.3";
  }
  if (!bad && !lossless) bad = "recSeq must fit in 64 bits";
  if (!bad) {
    if (cipher == "AES_GCM_128") {
      u.info.cipher_type = TLS_CIPHER_AES_GCM_128;
      bad = FillCrypto(&u.gcm128, key, iv, salt, seq);
      len = sizeof(u.gcm128);
    } else if (cipher == "AES_GCM_256") {
      u.info.cipher_type = TLS_CIPHER_AES_GCM_256;
      bad = FillCrypto(&u.gcm256, key, iv, salt, seq);
      len = sizeof(u.gcm256);
    } else if (cipher == "CHACHA20_POLY1305") {
      u.info.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
      bad = FillCrypto(&u.chacha, key, iv, salt, seq);
      len = sizeof(u.chacha);
    } else if (cipher == "AES_CCM_128") {
      u.info.cipher_type = TLS_CIPHER_AES_CCM_128;
      bad = FillCrypto(&u.ccm128, key, iv, salt, seq);
      len = sizeof(u.ccm128);
    } else {
      bad = "unknown cipher";
    }
  }
  int rc = 0, err = 0;
  if (!bad) {
    rc = setsockopt(fd, SOL_TLS, optname, &u, len);
    err = errno;
  }
  // The kernel copied what it needs; our copy and the caller's go now.
  Wipe(&u, sizeof(u));
  wipeCaller();
  if (bad) {
    ThrowErrno(env, EINVAL, syscall, bad);
  } else if (rc != 0) {
    ThrowErrno(env, err, syscall);
  }
  return env.Undefined();
}

// getCryptoInfo(fd, dir) -> {version, cipher, recSeq}. The kernel also returns the key
// and IV; they are wiped here and never reach JavaScript.
Napi::Value GetCryptoInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd, optname;
  if (!GetFd(info, 0, &fd) || !GetDirection(info, 1, &optname)) return env.Undefined();
  const char* syscall = optname == TLS_TX ? "getsockopt(TLS_TX)" : "getsockopt(TLS_RX)";

  CryptoInfoUnion u;
  memset(&u, 0, sizeof(u));
  // First the common header (version + cipher), then exactly the cipher's struct size:
  // the kernel insists on one of those two lengths.
  socklen_t len = sizeof(u.info);
  if (getsockopt(fd, SOL_TLS, optname, &u, &len) != 0) {
    ThrowErrno(env, errno, syscall);
    return env.Undefined();
  }
  const uint16_t version = u.info.version, ctype = u.info.cipher_type;
  const char* cipherName = nullptr;
  for (const auto& c : kCiphers)
    if (c.type == ctype) cipherName = c.name;
  socklen_t full = 0;
  switch (ctype) {
    case TLS_CIPHER_AES_GCM_128: full = sizeof(u.gcm128); break;
    case TLS_CIPHER_AES_GCM_256: full = sizeof(u.gcm256); break;
    case TLS_CIPHER_CHACHA20_POLY1305: full = sizeof(u.chacha); break;
    case TLS_CIPHER_AES_CCM_128: full = sizeof(u.ccm128); break;
    default: break;
  }
  uint64_t seq = 0;
  if (full > 0) {
    len = full;
    int rc = getsockopt(fd, SOL_TLS, optname, &u, &len);
    int err = errno;
    if (rc == 0) {
      switch (ctype) {
        case TLS_CIPHER_AES_GCM_128: seq = ReadSeq(&u.gcm128); break;
        case TLS_CIPHER_AES_GCM_256: seq = ReadSeq(&u.gcm256); break;
        case TLS_CIPHER_CHACHA20_POLY1305: seq = ReadSeq(&u.chacha); break;
        case TLS_CIPHER_AES_CCM_128: seq = ReadSeq(&u.ccm128); break;
        default: break;
      }
    }
    Wipe(&u, sizeof(u));  // the kernel handed back the key and IV too
    if (rc != 0) {
      ThrowErrno(env, err, syscall);
      return env.Undefined();
    }
  }
  Wipe(&u, sizeof(u));
  Napi::Object out = Napi::Object::New(env);
  if (version == TLS_1_2_VERSION)
    out.Set("version", "TLSv1.2");
  else if (version == TLS_1_3_VERSION)
    out.Set("version", "TLSv1.3");
  else
    out.Set("version", Napi::Number::New(env, version));
  if (cipherName)
    out.Set("cipher", cipherName);
  else
    out.Set("cipher", Napi::Number::New(env, ctype));
  out.Set("recSeq", Napi::BigInt::New(env, seq));
  return out;
}

Napi::Value SetOption(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd, optname;
  const char* label;
  if (!GetFd(info, 0, &fd) || !GetOption(info, 1, &optname, &label)) return env.Undefined();
  if (info.Length() < 3 || !info[2].IsBoolean()) {
    Napi::TypeError::New(env, "value must be a boolean").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int value = info[2].As<Napi::Boolean>().Value() ? 1 : 0;
  if (setsockopt(fd, SOL_TLS, optname, &value, sizeof(value)) != 0) {
    std::string syscall = std::string("setsockopt(") + label + ")";
    ThrowErrno(env, errno, syscall.c_str());
  }
  return env.Undefined();
}

Napi::Value GetOptionValue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd, optname;
  const char* label;
  if (!GetFd(info, 0, &fd) || !GetOption(info, 1, &optname, &label)) return env.Undefined();
  int value = 0;
  socklen_t len = sizeof(value);
  if (getsockopt(fd, SOL_TLS, optname, &value, &len) != 0) {
    std::string syscall = std::string("getsockopt(") + label + ")";
    ThrowErrno(env, errno, syscall.c_str());
    return env.Undefined();
  }
  return Napi::Boolean::New(env, value != 0);
}

// recvRecordPacked(fd, buf) -> bytes * 256 + type | -1 (EAGAIN). type 0 = no record-type cmsg
// (EOF, or a socket without kTLS RX). One number, not an object: two named properties set from
// here cost more than the recvmsg's own user time (dev host); native/index.ts unpacks it.
Napi::Value RecvRecordPacked(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  BufferArg buf;
  if (!GetFd(info, 0, &fd) || !GetBuffer(info, 1, &buf)) return env.Undefined();
  union {
    char buf[CMSG_SPACE(sizeof(unsigned char))];
    struct cmsghdr align;
  } cbuf;
  ssize_t r;
  struct msghdr msg;
  do {
    memset(&cbuf, 0, sizeof(cbuf));
    memset(&msg, 0, sizeof(msg));
    struct iovec iov = {buf.data, buf.length};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.buf;
    msg.msg_controllen = sizeof(cbuf.buf);
    r = recvmsg(fd, &msg, MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    ThrowErrno(env, errno, "recvmsg");
    return env.Undefined();
  }
  int type = 0;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE) type = *CMSG_DATA(c);
  // Exact in a double for any r below 2^45.
  return Napi::Number::New(env, static_cast<double>(r) * 256 + type);
}

// sendRecord(fd, type, data) -> bytes sent | -1 (EAGAIN)
Napi::Value SendRecord(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  BufferArg data;
  if (!GetFd(info, 0, &fd)) return env.Undefined();
  if (info.Length() < 2 || !info[1].IsNumber()) {
    Napi::TypeError::New(env, "record type must be a number 1..255").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  int32_t type = info[1].As<Napi::Number>().Int32Value();
  if (type < 1 || type > 255) {
    Napi::RangeError::New(env, "record type must be 1..255").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  if (!GetBuffer(info, 2, &data)) return env.Undefined();
  union {
    char buf[CMSG_SPACE(sizeof(unsigned char))];
    struct cmsghdr align;
  } cbuf;
  ssize_t r;
  do {
    memset(&cbuf, 0, sizeof(cbuf));
    struct iovec iov = {data.data, data.length};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.buf;
    msg.msg_controllen = sizeof(cbuf.buf);
    struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_TLS;
    c->cmsg_type = TLS_SET_RECORD_TYPE;
    c->cmsg_len = CMSG_LEN(sizeof(unsigned char));
    *CMSG_DATA(c) = static_cast<unsigned char>(type);
    // MSG_NOSIGNAL: a peer reset must come back as EPIPE, not kill the process.
    r = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    ThrowErrno(env, errno, "sendmsg");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(r));
}

// sendPlain(fd, data) -> bytes sent | -1 (EAGAIN)
// send(MSG_DONTWAIT | MSG_NOSIGNAL) of application data: once TLS_TX is set
// the kernel makes the records. One syscall, no libuv write request: the
// record layer uses it only while libuv's write queue for the socket is empty.
Napi::Value SendPlain(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  BufferArg data;
  if (!GetFd(info, 0, &fd) || !GetBuffer(info, 1, &data)) return env.Undefined();
  ssize_t r;
  do {
    // MSG_NOSIGNAL: a peer reset must come back as EPIPE, not kill the process.
    r = send(fd, data.data, data.length, MSG_DONTWAIT | MSG_NOSIGNAL);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    ThrowErrno(env, errno, "send");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(r));
}

// recvPlainBytes(fd, buf) -> bytes | -1 (EAGAIN); 0 with a non-empty buf is EOF. A number, as
// recvRecordPacked: native/index.ts makes recvPlain's result object.
Napi::Value RecvPlainBytes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd;
  BufferArg buf;
  if (!GetFd(info, 0, &fd) || !GetBuffer(info, 1, &buf)) return env.Undefined();
  ssize_t r;
  do {
    r = recv(fd, buf.data, buf.length, MSG_DONTWAIT);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    ThrowErrno(env, errno, "recv");
    return env.Undefined();
  }
  return Napi::Number::New(env, static_cast<double>(r));
}

// setErrorClass(NativeSyscallError): the loader hands us its class once.
Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsFunction()) {
    Napi::TypeError::New(info.Env(), "expected a class").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  AddonData* data = info.Env().GetInstanceData<AddonData>();
  data->errorClass = Napi::Persistent(info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

Napi::Object Constants(Napi::Env env) {
  Napi::Object c = Napi::Object::New(env);
  auto set = [&](const char* k, double v) { c.Set(k, Napi::Number::New(env, v)); };
  set("SOL_TLS", SOL_TLS);
  set("SOL_TCP", static_cast<int>(SOL_TCP));
  set("TCP_ULP", TCP_ULP);
  set("TLS_TX", TLS_TX);
  set("TLS_RX", TLS_RX);
  set("TLS_TX_ZEROCOPY_RO", TLS_TX_ZEROCOPY_RO);
  set("TLS_RX_EXPECT_NO_PAD", TLS_RX_EXPECT_NO_PAD);
  set("TLS_SET_RECORD_TYPE", TLS_SET_RECORD_TYPE);
  set("TLS_GET_RECORD_TYPE", TLS_GET_RECORD_TYPE);
  set("TLS_1_2_VERSION", TLS_1_2_VERSION);
  set("TLS_1_3_VERSION", TLS_1_3_VERSION);
  set("TLS_CIPHER_AES_GCM_128", TLS_CIPHER_AES_GCM_128);
  set("TLS_CIPHER_AES_GCM_256", TLS_CIPHER_AES_GCM_256);
  set("TLS_CIPHER_CHACHA20_POLY1305", TLS_CIPHER_CHACHA20_POLY1305);
  set("TLS_CIPHER_AES_CCM_128", TLS_CIPHER_AES_CCM_128);
  set("CRYPTO_INFO_SIZE_AES_GCM_128", sizeof(struct tls12_crypto_info_aes_gcm_128));
  set("CRYPTO_INFO_SIZE_AES_GCM_256", sizeof(struct tls12_crypto_info_aes_gcm_256));
  set("CRYPTO_INFO_SIZE_CHACHA20_POLY1305", sizeof(struct tls12_crypto_info_chacha20_poly1305));
  set("CRYPTO_INFO_SIZE_AES_CCM_128", sizeof(struct tls12_crypto_info_aes_ccm_128));
  c.Set("HEADER_HAS_TLS_TX_ZEROCOPY_RO", Napi::Boolean::New(env, KTLS_HEADER_HAS_ZEROCOPY_RO));
  c.Set("HEADER_HAS_TLS_RX_EXPECT_NO_PAD", Napi::Boolean::New(env, KTLS_HEADER_HAS_NO_PAD));
  c.Freeze();
  return c;
}

Napi::Object InitImpl(Napi::Env env, Napi::Object exports) {
  AddonData* data = new AddonData();
  env.SetInstanceData(data);  // deleted by napi at env teardown
  exports.Set("attachUlp", Napi::Function::New(env, AttachUlp, "attachUlp"));
  exports.Set("setCryptoInfo", Napi::Function::New(env, SetCryptoInfo, "setCryptoInfo"));
  exports.Set("getCryptoInfo", Napi::Function::New(env, GetCryptoInfo, "getCryptoInfo"));
  exports.Set("setOption", Napi::Function::New(env, SetOption, "setOption"));
  exports.Set("getOption", Napi::Function::New(env, GetOptionValue, "getOption"));
  exports.Set("recvRecordPacked", Napi::Function::New(env, RecvRecordPacked, "recvRecordPacked"));
  exports.Set("sendRecord", Napi::Function::New(env, SendRecord, "sendRecord"));
  exports.Set("recvPlainBytes", Napi::Function::New(env, RecvPlainBytes, "recvPlainBytes"));
  exports.Set("sendPlain", Napi::Function::New(env, SendPlain, "sendPlain"));
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
  exports.Set("constants", Constants(env));
  InitPoller(env, exports, data);
  InitAead(env, exports);
  return InitSplice(env, exports, data);
}

}  // namespace

void ThrowErrno(Napi::Env env, int err, const char* syscall, const char* detail) {
  AddonData* data = env.GetInstanceData<AddonData>();
  Napi::Value detailValue = detail ? Napi::String::New(env, detail) : env.Undefined();
  if (data && !data->errorClass.IsEmpty()) {
    Napi::Object e = data->errorClass.New(
        {Napi::Number::New(env, err), Napi::String::New(env, syscall), detailValue});
    if (!env.IsExceptionPending() && !e.IsEmpty()) {
      Napi::Error(env, e).ThrowAsJavaScriptException();
      return;
    }
    if (env.IsExceptionPending()) return;  // the class itself threw: let that through
  }
  // No class registered (addon used without the loader): a plain Error with the same fields.
  Napi::Error e = Napi::Error::New(env, std::string(syscall) + " failed: " + strerror(err));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  e.ThrowAsJavaScriptException();
}

Napi::Value ErrnoValue(Napi::Env env, int err, const char* syscall) {
  ThrowErrno(env, err, syscall);
  // Take the error back out of the pending slot: the caller passes it on as a value.
  return env.GetAndClearPendingException().Value();
}

bool GetFd(const Napi::CallbackInfo& info, size_t index, int* fd) {
  if (info.Length() > index && info[index].IsNumber()) {
    double d = info[index].As<Napi::Number>().DoubleValue();
    if (d >= 0 && d <= 2147483647.0 && d == static_cast<double>(static_cast<int>(d))) {
      *fd = static_cast<int>(d);
      return true;
    }
  }
  Napi::TypeError::New(info.Env(), "fd must be a non-negative integer").ThrowAsJavaScriptException();
  return false;
}

Napi::Value Construct(const Napi::FunctionReference& ctor, const Napi::CallbackInfo& info) {
  std::vector<napi_value> args;
  for (size_t i = 0; i < info.Length(); i++) args.push_back(info[i]);
  return ctor.New(args);
}

}  // namespace ktls

// NODE_API_MODULE pastes the name into an identifier, so it cannot be qualified.
static Napi::Object InitKtlsNative(Napi::Env env, Napi::Object exports) {
  return ktls::InitImpl(env, exports);
}
NODE_API_MODULE(ktls_native, InitKtlsNative)
