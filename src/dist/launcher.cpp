// Spawning and supervising worker processes (launcher.h).
#include "dist/launcher.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fmt/format.h>
#include <string>

#include "core/error.h"
#include "dist/kv_store.h"

extern char** environ;

namespace ftune {

namespace {

using Clock = std::chrono::steady_clock;

volatile sig_atomic_t g_interrupted = 0;  // the first SIGINT/SIGTERM
volatile sig_atomic_t g_signals = 0;      // how many arrived
void on_signal(int sig) {
  if (!g_interrupted) g_interrupted = sig;
  g_signals = g_signals + 1;
}

struct Worker {
  WorkerSpec spec;
  pid_t pid = -1;
  int err_fd = -1;  // read end of its stderr
  int hb_fd = -1;   // read end of its heartbeat pipe
  Clock::time_point last_beat;
  bool waiting = false;  // inside a collective (waiting for peers is not a hang)
  std::string pending;     // partial stderr line
  std::string last_error;  // last "error: ..." line (without the prefix)
  std::string last_line;   // last other non-empty line
  bool running = false;
  int status = 0;
};


std::string signal_text(int sig) {
  const char* d = strsignal(sig);
  return fmt::format("signal {} ({})", sig, d ? d : "?");
}

void forward_output(Worker& w, const char* buf, size_t n, bool flush_all) {
  w.pending.append(buf, n);
  size_t pos;
  while ((pos = w.pending.find('\n')) != std::string::npos || (flush_all && !w.pending.empty())) {
    const bool whole = pos != std::string::npos;
    std::string line = whole ? w.pending.substr(0, pos) : w.pending;
    w.pending.erase(0, whole ? pos + 1 : w.pending.size());
    std::string text = line;
    if (const auto cr = text.rfind('\r'); cr != std::string::npos) text = text.substr(cr + 1);
    if (text.rfind("error: ", 0) == 0)
      w.last_error = text.substr(7);
    else if (!text.empty())
      w.last_line = text;
    const std::string out = (w.spec.rank == 0 ? "" : fmt::format("[rank {}] ", w.spec.rank)) + line + "\n";
    (void)!::write(STDERR_FILENO, out.data(), out.size());
  }
}

void drain(Worker& w) {
  char buf[4096];
  while (w.err_fd >= 0) {
    const ssize_t n = ::read(w.err_fd, buf, sizeof buf);
    if (n > 0) {
      forward_output(w, buf, static_cast<size_t>(n), false);
      continue;
    }
    if (n < 0 && (errno == EINTR)) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    forward_output(w, "", 0, true);
    ::close(w.err_fd);
    w.err_fd = -1;
  }
}

std::vector<std::string> worker_env(const LaunchPlan& plan, const Worker& w, int hb_fd, int store_fd) {
  std::vector<std::string> env;
  auto skip = [](const std::string& kv) {
    for (const char* p : {"FTUNE_RANK=", "FTUNE_WORLD_SIZE=", "FTUNE_LOCAL_RANK=", "FTUNE_LOCAL_WORLD_SIZE=",
                          "FTUNE_MASTER_ADDR=", "FTUNE_MASTER_PORT=", "FTUNE_STORE_FD=",
                          "FTUNE_HEARTBEAT_FD=", "FTUNE_DEVICE="})
      if (kv.rfind(p, 0) == 0) return true;
    return false;
  };
  bool has_omp = false, has_blas = false;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    if (skip(kv)) continue;
    if (!w.spec.cuda_visible.empty() && kv.rfind("CUDA_VISIBLE_DEVICES=", 0) == 0) continue;
    has_omp |= kv.rfind("OMP_NUM_THREADS=", 0) == 0;
    has_blas |= kv.rfind("OPENBLAS_NUM_THREADS=", 0) == 0;
    env.push_back(kv);
  }
  env.push_back(fmt::format("FTUNE_RANK={}", w.spec.rank));
  env.push_back(fmt::format("FTUNE_WORLD_SIZE={}", plan.world_size));
  env.push_back(fmt::format("FTUNE_LOCAL_RANK={}", w.spec.local_rank));
  env.push_back(fmt::format("FTUNE_LOCAL_WORLD_SIZE={}", plan.workers.size()));
  env.push_back(fmt::format("FTUNE_MASTER_ADDR={}", plan.master_addr));
  env.push_back(fmt::format("FTUNE_MASTER_PORT={}", plan.master_port));
  env.push_back("FTUNE_JOB_TOKEN=" + plan.job_token);
  env.push_back(fmt::format("FTUNE_HEARTBEAT_FD={}", hb_fd));
  env.push_back(fmt::format("FTUNE_DEVICE={}", w.spec.device));
  if (store_fd >= 0) env.push_back(fmt::format("FTUNE_STORE_FD={}", store_fd));
  if (!w.spec.cuda_visible.empty()) env.push_back("CUDA_VISIBLE_DEVICES=" + w.spec.cuda_visible);
  if (plan.threads_per_worker > 0) {
    if (!has_omp) env.push_back(fmt::format("OMP_NUM_THREADS={}", plan.threads_per_worker));
    if (!has_blas) env.push_back(fmt::format("OPENBLAS_NUM_THREADS={}", plan.threads_per_worker));
  }
  return env;
}

// Whether `pid` is stopped (state T or t in /proc/<pid>/stat).
bool is_stopped(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  FILE* f = std::fopen(path, "r");
  if (!f) return false;
  char buf[512];
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  const char* close = std::strrchr(buf, ')');  // the name may hold spaces and parentheses
  return close && close[1] == ' ' && (close[2] == 'T' || close[2] == 't');
}

// Signals every running worker, then waits up to `grace`, then SIGKILLs the rest; reaps all.
void stop_all(std::vector<Worker>& ws, pid_t pgid, int sig) {
  if (pgid > 0) ::kill(-pgid, sig);
  for (auto& w : ws)
    if (w.running) ::kill(w.pid, sig);
  if (pgid > 0) ::kill(-pgid, SIGCONT);  // a stopped worker acts on the signal
  const auto deadline = Clock::now() + std::chrono::seconds(3);
  while (true) {
    bool any = false;
    for (auto& w : ws) {
      if (!w.running) continue;
      if (::waitpid(w.pid, &w.status, WNOHANG) == w.pid) {
        w.running = false;
      } else {
        any = true;
      }
      drain(w);
    }
    if (!any) break;
    if (Clock::now() > deadline) {
      if (pgid > 0) ::kill(-pgid, SIGKILL);
      for (auto& w : ws)
        if (w.running) ::kill(w.pid, SIGKILL);
      for (auto& w : ws)
        if (w.running && ::waitpid(w.pid, &w.status, 0) == w.pid) w.running = false;
      break;
    }
    ::usleep(20000);
  }
  for (auto& w : ws) drain(w);
}

std::string describe_exit(const Worker& w) {
  const std::string who = fmt::format("rank {} ({}, pid {})", w.spec.rank, w.spec.device, w.pid);
  if (WIFSIGNALED(w.status)) return fmt::format("{} was killed by {}", who, signal_text(WTERMSIG(w.status)));
  const int code = WIFEXITED(w.status) ? WEXITSTATUS(w.status) : -1;
  const std::string& why = w.last_error.empty() ? w.last_line : w.last_error;
  if (why.empty()) return fmt::format("{} exited with code {}", who, code);
  return fmt::format("{} exited with code {}: {}", who, code, why);
}

}  // namespace

void send_heartbeat(int fd, bool entering_collective) {
  if (fd < 0) return;
  const char c = entering_collective ? 'w' : 'b';
  (void)!::write(fd, &c, 1);
}

int run_launcher(const LaunchPlan& plan) {
  FTUNE_CHECK(!plan.workers.empty(), "launcher: no workers to start");
  char exe[4096];
  if (plan.exe.empty()) {
    const ssize_t len = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    FTUNE_CHECK(len > 0, "launcher: cannot find the ftune binary (/proc/self/exe)");
    exe[len] = '\0';
  } else {
    FTUNE_CHECK(plan.exe.size() < sizeof exe && ::access(plan.exe.c_str(), X_OK) == 0,
                "launcher: worker binary '{}' is not an executable file", plan.exe);
    std::strcpy(exe, plan.exe.c_str());
  }

  LaunchPlan p = plan;
  int store_fd = -1;
  if (p.hosts_store) store_fd = bind_listen_socket(p.master_addr, p.master_port, &p.master_port);

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {}, old_term {};
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);
  g_interrupted = 0;
  g_signals = 0;
  bool forwarded = false;  // the first signal was passed on to the workers

  std::vector<Worker> ws(p.workers.size());
  pid_t pgid = 0;
  const pid_t self = ::getpid();
  for (size_t i = 0; i < ws.size(); ++i) {
    Worker& w = ws[i];
    w.spec = p.workers[i];
    int errp[2], hbp[2];
    FTUNE_CHECK(::pipe2(errp, O_CLOEXEC) == 0 && ::pipe2(hbp, O_CLOEXEC) == 0,
                "launcher: pipe(): {}", std::strerror(errno));
    const bool pass_store = w.spec.rank == 0 && store_fd >= 0;
    const std::vector<std::string> env = worker_env(p, w, hbp[1], pass_store ? store_fd : -1);
    std::vector<char*> envp, argv;
    for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
    argv.push_back(exe);
    for (size_t a = 1; a < p.argv.size(); ++a) argv.push_back(const_cast<char*>(p.argv[a].c_str()));
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    FTUNE_CHECK(pid >= 0, "launcher: fork(): {}", std::strerror(errno));
    if (pid == 0) {
      // Child: its own process group with the other workers (Ctrl-C reaches the launcher
      // only), killed if the launcher dies, stderr into the pipe, the two fds it needs kept.
      ::setpgid(0, pgid);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != self) ::_exit(1);
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      ::dup2(errp[1], STDERR_FILENO);
      ::fcntl(hbp[1], F_SETFD, 0);
      if (pass_store) ::fcntl(store_fd, F_SETFD, 0);
      ::execve(exe, argv.data(), envp.data());
      const char msg[] = "error: launcher: exec of the ftune binary failed\n";
      (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
      ::_exit(127);
    }
    if (pgid == 0) pgid = pid;
    ::setpgid(pid, pgid);  // (also done in the child; whichever runs first)
    ::close(errp[1]);
    ::close(hbp[1]);
    w.pid = pid;
    w.err_fd = errp[0];
    w.hb_fd = hbp[0];
    ::fcntl(w.err_fd, F_SETFL, O_NONBLOCK);
    ::fcntl(w.hb_fd, F_SETFL, O_NONBLOCK);
    w.running = true;
    w.last_beat = Clock::now();
  }
  if (store_fd >= 0) ::close(store_fd);  // rank 0 owns it now

  std::string failure;
  const Worker* failed = nullptr;
  while (true) {
    std::vector<pollfd> fds;
    for (auto& w : ws) {
      if (w.err_fd >= 0) fds.push_back({w.err_fd, POLLIN, 0});
      if (w.hb_fd >= 0) fds.push_back({w.hb_fd, POLLIN, 0});
    }
    if (!fds.empty()) ::poll(fds.data(), fds.size(), 200);
    else ::usleep(200000);
    const auto now = Clock::now();
    for (auto& w : ws) {
      drain(w);
      char buf[256];
      while (w.hb_fd >= 0) {
        const ssize_t n = ::read(w.hb_fd, buf, sizeof buf);
        if (n > 0) {
          w.last_beat = now;
          w.waiting = buf[n - 1] == 'w';
          continue;
        }
        if (n == 0) { ::close(w.hb_fd); w.hb_fd = -1; }
        break;
      }
    }
    bool all_done = true;
    for (auto& w : ws) {
      if (!w.running) continue;
      if (::waitpid(w.pid, &w.status, WNOHANG) == w.pid) {
        w.running = false;
        drain(w);
        const bool ok = WIFEXITED(w.status) && WEXITSTATUS(w.status) == 0;
        const bool echo = WIFEXITED(w.status) && WEXITSTATUS(w.status) == kExitPeerLost;
        // A peer-lost exit is an echo of another failure: report it only if nothing better
        // shows up (checked below after a short wait).
        if (!ok && (!failed || (failed && WIFEXITED(failed->status) &&
                                WEXITSTATUS(failed->status) == kExitPeerLost && !echo))) {
          failed = &w;
        }
      } else {
        all_done = false;
      }
    }
    if (g_interrupted && !forwarded && g_signals < 2) {
      // First signal: passed on, and the workers stop together at the next step boundary
      // (writing a checkpoint when train.save_on_interrupt; train/signals.h). Their exits
      // from here on are the interruption, not failures.
      forwarded = true;
      std::fprintf(stderr, "launcher: %s: asking the workers to stop at the end of the step "
                           "(again to stop them at once)\n", signal_text(g_interrupted).c_str());
      if (pgid > 0) {
        ::kill(-pgid, g_interrupted);  // once: a second delivery would stop a worker at once
      } else {
        for (auto& w : ws)
          if (w.running) ::kill(w.pid, g_interrupted);
      }
    }
    if (forwarded && g_signals < 2) failed = nullptr;  // exits are the interruption
    if (g_interrupted && (!forwarded || g_signals >= 2)) {
      int n = 0;
      for (auto& w : ws) n += w.running;
      stop_all(ws, pgid, SIGTERM);
      for (auto& w : ws) {
        if (w.err_fd >= 0) ::close(w.err_fd);
        if (w.hb_fd >= 0) ::close(w.hb_fd);
      }
      ::sigaction(SIGINT, &old_int, nullptr);
      ::sigaction(SIGTERM, &old_term, nullptr);
      fail("interrupted ({}): stopped {} running worker(s)", signal_text(g_interrupted), n);
    }
    if (failed) {
      // Give the real cause a moment to surface when the first exit was an echo.
      if (WIFEXITED(failed->status) && WEXITSTATUS(failed->status) == kExitPeerLost) {
        const auto until = Clock::now() + std::chrono::milliseconds(1500);
        while (Clock::now() < until) {
          for (auto& w : ws) {
            drain(w);
            if (w.running && ::waitpid(w.pid, &w.status, WNOHANG) == w.pid) {
              w.running = false;
              drain(w);
              if (!(WIFEXITED(w.status) && (WEXITSTATUS(w.status) == 0 || WEXITSTATUS(w.status) == kExitPeerLost)))
                failed = &w;
            }
          }
          if (!(WIFEXITED(failed->status) && WEXITSTATUS(failed->status) == kExitPeerLost)) break;
          ::usleep(50000);
        }
      }
      // Still only an echo: the ranks timed out in a collective waiting for a rank that went
      // quiet; that one is the cause.
      if (WIFEXITED(failed->status) && WEXITSTATUS(failed->status) == kExitPeerLost) {
        const Worker* quiet = nullptr;
        for (auto& w : ws)
          if (w.running && (!w.waiting || is_stopped(w.pid)) && (!quiet || w.last_beat < quiet->last_beat)) quiet = &w;
        if (quiet && std::chrono::duration<double>(Clock::now() - quiet->last_beat).count() >
                         0.5 * p.timeout_s) {
          int others = 0;
          for (auto& o : ws) others += o.running && &o != quiet;
          failure = fmt::format("rank {} ({}, pid {}) hung: no progress for {:.0f} s "
                                "(distributed.timeout_s={}); stopped it and the other {} worker(s)",
                                quiet->spec.rank, quiet->spec.device, quiet->pid,
                                std::chrono::duration<double>(Clock::now() - quiet->last_beat).count(),
                                p.timeout_s, others);
          stop_all(ws, pgid, SIGTERM);
          break;
        }
      }
      int others = 0;
      for (auto& w : ws) others += w.running;
      failure = describe_exit(*failed);
      stop_all(ws, pgid, SIGTERM);
      failure += fmt::format("; stopped the other {} worker(s)", others);
      break;
    }
    for (auto& w : ws) {
      // Waiting in a collective is not a hang, unless the rank is stopped (SIGSTOP, a debugger):
      // then it is the one the others wait for.
      if (!w.running || (w.waiting && !is_stopped(w.pid))) continue;
      const double quiet = std::chrono::duration<double>(now - w.last_beat).count();
      if (quiet > p.timeout_s) {
        int others = 0;
        for (auto& o : ws) others += o.running && &o != &w;
        failure = fmt::format("rank {} ({}, pid {}) hung: no progress for {:.0f} s "
                              "(distributed.timeout_s={}){}; stopped it and the other {} worker(s)",
                              w.spec.rank, w.spec.device, w.pid, quiet, p.timeout_s,
                              w.last_error.empty() ? "" : "; last error line: " + w.last_error, others);
        stop_all(ws, pgid, SIGTERM);
        break;
      }
    }
    if (!failure.empty() || all_done) break;
  }
  for (auto& w : ws) {
    if (w.err_fd >= 0) ::close(w.err_fd);
    if (w.hb_fd >= 0) ::close(w.hb_fd);
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  if (!failure.empty()) throw Error(failure);
  return forwarded ? static_cast<int>(g_interrupted) : 0;
}

}  // namespace ftune
