#include "support/gloo_ranks.h"

#include <exception>
#include <thread>

#include "dist/kv_store.h"

namespace ftune::test {

std::vector<std::string> run_ranks(int world, const std::function<void(int, Communicator&)>& fn) {
  int port = 0;
  const int listen_fd = bind_listen_socket("127.0.0.1", 0, &port);
  std::vector<std::string> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        KeyValueStore store("127.0.0.1", port, r, world, 30, r == 0 ? listen_fd : -1);
        CommOptions o;
        o.rank = r;
        o.world_size = world;
        o.timeout_s = 30;
        auto comm = make_gloo_communicator(store, o);
        fn(r, *comm);
        comm->barrier();  // rank 0's store outlives the others' use of it
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  return errors;
}

}  // namespace ftune::test
