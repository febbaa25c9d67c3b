// The rendezvous key-value store: rank 0 serves it over TCP (a thread in its process), every
// rank (rank 0 included) is a client. Gloo connects its full mesh through it and NCCL's
// ncclUniqueId travels through it. It lives only as long as rank 0's process, so no state of
// an earlier run can be read back (unlike a file on a shared filesystem); a client that finds
// a server of another job size is refused.
#pragma once
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace ftune {

class KeyValueStore {
 public:
  // rank 0 serves on `listen_fd` when >= 0 (a socket the launcher bound and passed down, so
  // no other process can take the port in between), else binds addr:port itself. Every rank
  // then connects to addr:port, retrying until timeout_s.
  KeyValueStore(const std::string& addr, int port, int rank, int world_size, int timeout_s,
                int listen_fd = -1);
  ~KeyValueStore();
  KeyValueStore(const KeyValueStore&) = delete;
  KeyValueStore& operator=(const KeyValueStore&) = delete;

  void set(const std::string& key, const std::vector<char>& value);
  // Waits until the key is set (up to timeout_s; then throws CommError naming the key).
  std::vector<char> get(const std::string& key);

  int rank() const { return rank_; }
  int world_size() const { return world_; }
  int timeout_s() const { return timeout_s_; }

 private:
  void serve(int listen_fd);
  void request(char op, const std::string& key, const std::vector<char>& value,
               std::vector<char>* reply);

  int rank_, world_, timeout_s_;
  std::string addr_;
  int port_;
  int sock_ = -1;           // client connection
  int wake_[2] = {-1, -1};  // stops the server thread
  std::thread server_;
};

// Binds a listening TCP socket on addr:port (port 0 = any free port); returns the fd and
// writes the port. Throws when the port is taken.
int bind_listen_socket(const std::string& addr, int port, int* bound_port);

// The secret every rank presents to the store: FTUNE_JOB_TOKEN (ftune's launcher sets a random
// one for its workers; give every node the same value for --nnodes > 1), else torchrun's
// TORCHELASTIC_RUN_ID or SLURM_JOB_ID; empty when none is set (then only the world size is
// checked, and the store relies on its address: 127.0.0.1 for one machine).
std::string rendezvous_job_token();
// 128 random bits as 32 hex digits (/dev/urandom).
std::string new_job_token();

}  // namespace ftune
