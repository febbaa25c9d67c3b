// TCP key-value store for the rendezvous (kv_store.h). Messages: op (1 byte), key length
// (u32), key, value length (u32), value. Ops: 'H' hello with the world size and the job's token,
// 'S' set, 'G' get (answered once the key exists). Admission: a connection must say hello with
// the right world size and token before anything else, or it is answered 'E' and closed, so a
// stray or hostile process that finds the port cannot read or write the job's keys.
#include "dist/kv_store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>

#include <set>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <chrono>
#include <cstring>
#include <map>

#include "dist/communicator.h"

namespace ftune {

namespace {

bool write_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool read_all(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = ::recv(fd, c, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool send_msg(int fd, char op, const std::string& key, const std::vector<char>& value) {
  const uint32_t kl = static_cast<uint32_t>(key.size()), vl = static_cast<uint32_t>(value.size());
  return write_all(fd, &op, 1) && write_all(fd, &kl, 4) && write_all(fd, key.data(), kl) &&
         write_all(fd, &vl, 4) && write_all(fd, value.data(), vl);
}

bool recv_msg(int fd, char* op, std::string* key, std::vector<char>* value) {
  uint32_t kl = 0, vl = 0;
  if (!read_all(fd, op, 1) || !read_all(fd, &kl, 4) || kl > (1u << 20)) return false;
  key->resize(kl);
  if (!read_all(fd, key->data(), kl) || !read_all(fd, &vl, 4) || vl > (1u << 30)) return false;
  value->resize(vl);
  return read_all(fd, value->data(), vl);
}

sockaddr_storage resolve(const std::string& addr, int port, socklen_t* len) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const int rc = getaddrinfo(addr.c_str(), std::to_string(port).c_str(), &hints, &res);
  if (rc != 0 || !res)
    throw CommError(fmt::format("rendezvous: cannot resolve master address '{}': {}", addr,
                                gai_strerror(rc)));
  sockaddr_storage ss{};
  std::memcpy(&ss, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  return ss;
}

}  // namespace

std::string rendezvous_job_token() {
  for (const char* name : {"FTUNE_JOB_TOKEN", "TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"})
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') return v;
  return "";
}

std::string new_job_token() {
  unsigned char b[16] = {};
  FILE* f = std::fopen("/dev/urandom", "rb");
  FTUNE_CHECK(f != nullptr && std::fread(b, 1, sizeof b, f) == sizeof b,
              "rendezvous: cannot read /dev/urandom for the job token");
  std::fclose(f);
  std::string hex;
  for (unsigned char c : b) hex += fmt::format("{:02x}", c);
  return hex;
}

int bind_listen_socket(const std::string& addr, int port, int* bound_port) {
  socklen_t len = 0;
  sockaddr_storage ss = resolve(addr, port, &len);
  const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  FTUNE_CHECK(fd >= 0, "rendezvous: socket(): {}", std::strerror(errno));
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 1024) != 0) {
    const int e = errno;
    ::close(fd);
    fail("rendezvous: cannot listen on {}:{}: {} (another job on that port? set "
         "distributed.master_port or --master-port)",
         addr, port, std::strerror(e));
  }
  sockaddr_storage got{};
  socklen_t gl = sizeof got;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&got), &gl);
  *bound_port = ntohs(got.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&got)->sin6_port
                                                 : reinterpret_cast<sockaddr_in*>(&got)->sin_port);
  return fd;
}

KeyValueStore::KeyValueStore(const std::string& addr, int port, int rank, int world_size,
                             int timeout_s, int listen_fd)
    : rank_(rank), world_(world_size), timeout_s_(timeout_s), addr_(addr), port_(port) {
  if (rank == 0) {
    int bound = port;
    const int fd = listen_fd >= 0 ? listen_fd : bind_listen_socket(addr, port, &bound);
    port_ = bound;
    FTUNE_CHECK(::pipe2(wake_, O_CLOEXEC) == 0, "rendezvous: pipe(): {}", std::strerror(errno));
    server_ = std::thread([this, fd] { serve(fd); });
  }
  // Connect, retrying while rank 0 is not listening yet.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  std::string last_error;
  while (true) {
    socklen_t len = 0;
    sockaddr_storage ss = resolve(addr_, port_, &len);
    sock_ = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FTUNE_CHECK(sock_ >= 0, "rendezvous: socket(): {}", std::strerror(errno));
    if (::connect(sock_, reinterpret_cast<sockaddr*>(&ss), len) == 0) break;
    last_error = std::strerror(errno);
    ::close(sock_);
    sock_ = -1;
    if (std::chrono::steady_clock::now() > deadline)
      throw CommError(fmt::format("rendezvous: rank {} could not reach rank 0 at {}:{} within "
                                  "{} s ({})", rank, addr_, port_, timeout_s, last_error));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const int one = 1;
  ::setsockopt(sock_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  timeval tv{timeout_s, 0};
  ::setsockopt(sock_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  const std::string token = rendezvous_job_token();
  std::vector<char> hello(sizeof(int32_t)), reply;
  const int32_t w = world_size;
  std::memcpy(hello.data(), &w, sizeof w);
  hello.insert(hello.end(), token.begin(), token.end());
  request('H', std::to_string(rank), hello, &reply);
  if (reply.size() != 1 || reply[0] != 'K')
    throw CommError(fmt::format("rendezvous: the server at {}:{} belongs to another job (a "
                                "different world size than this one's {} ranks, or another job "
                                "token: FTUNE_JOB_TOKEN must be the same on every node)",
                                addr_, port_, world_size));
}

KeyValueStore::~KeyValueStore() {
  if (sock_ >= 0) ::close(sock_);
  if (server_.joinable()) {
    const char c = 'x';
    (void)!::write(wake_[1], &c, 1);
    server_.join();
  }
  for (int fd : wake_)
    if (fd >= 0) ::close(fd);
}

void KeyValueStore::request(char op, const std::string& key, const std::vector<char>& value,
                            std::vector<char>* reply) {
  std::string rkey;
  char rop = 0;
  std::vector<char> tmp;
  if (!send_msg(sock_, op, key, value) || !recv_msg(sock_, &rop, &rkey, reply ? reply : &tmp)) {
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      throw CommError(fmt::format("rendezvous: rank {} timed out after {} s waiting for '{}' "
                                  "(a rank did not arrive; distributed.timeout_s)",
                                  rank_, timeout_s_, key));
    throw CommError(fmt::format("rendezvous: rank {} lost its connection to rank 0 while "
                                "waiting for '{}'", rank_, key));
  }
}

void KeyValueStore::set(const std::string& key, const std::vector<char>& value) {
  request('S', key, value, nullptr);
}

std::vector<char> KeyValueStore::get(const std::string& key) {
  std::vector<char> v;
  request('G', key, {}, &v);
  return v;
}

void KeyValueStore::serve(int listen_fd) {
  std::map<std::string, std::vector<char>> data;
  std::multimap<std::string, int> waiting;  // key -> client fd blocked in get
  std::vector<int> clients;
  std::set<int> admitted;  // connections that said hello with the right size and token
  const std::string token = rendezvous_job_token();
  auto drop = [&](int fd) {
    ::close(fd);
    admitted.erase(fd);
    std::erase(clients, fd);
    std::erase_if(waiting, [fd](const auto& kv) { return kv.second == fd; });
  };
  while (true) {
    std::vector<pollfd> fds{{wake_[0], POLLIN, 0}, {listen_fd, POLLIN, 0}};
    for (int c : clients) fds.push_back({c, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents) break;
    if (fds[1].revents & POLLIN) {
      const int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) clients.push_back(c);
    }
    for (size_t i = 2; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      const int c = fds[i].fd;
      char op = 0;
      std::string key;
      std::vector<char> value;
      if (!recv_msg(c, &op, &key, &value)) {
        drop(c);
        continue;
      }
      bool ok = true;
      if (op == 'H') {
        int32_t w = 0;
        bool good = value.size() == sizeof w + token.size();
        if (good) {
          std::memcpy(&w, value.data(), sizeof w);
          // Compare every byte whatever the first difference (no timing hint of the token).
          unsigned char diff = 0;
          for (size_t i = 0; i < token.size(); ++i)
            diff |= static_cast<unsigned char>(value[sizeof w + i] ^ token[i]);
          good = diff == 0 && w == world_;
        }
        ok = send_msg(c, 'R', "", {good ? 'K' : 'E'}) && good;
        if (ok) admitted.insert(c);
      } else if (!admitted.count(c)) {
        ok = false;  // anything before a good hello: not one of ours
      } else if (op == 'S') {
        data[key] = value;
        ok = send_msg(c, 'R', "", {});
        auto [b, e] = waiting.equal_range(key);
        std::vector<int> ready;
        for (auto it = b; it != e; ++it) ready.push_back(it->second);
        waiting.erase(b, e);
        for (int w : ready)
          if (!send_msg(w, 'R', key, value)) drop(w);
      } else if (op == 'G') {
        auto it = data.find(key);
        if (it != data.end())
          ok = send_msg(c, 'R', key, it->second);
        else
          waiting.emplace(key, c);
      }
      if (!ok) drop(c);
    }
  }
  for (int c : clients) ::close(c);
  ::close(listen_fd);
}

}  // namespace ftune
