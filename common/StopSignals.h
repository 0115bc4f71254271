#pragma once
// For main(): runs a daemon's event loop until it returns, with SIGTERM and SIGINT asking it to stop (its
// requestStop() must be async-signal-safe) and SIGPIPE ignored (a closed socket is an error return, not a death).

#include <signal.h>

namespace outbox {

template <typename Daemon>
int runUntilStopped(Daemon& daemon) {
  static Daemon* running = nullptr;
  running = &daemon;
  struct sigaction action {};
  action.sa_handler = [](int) {
    if (running != nullptr) running->requestStop();
  };
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  signal(SIGPIPE, SIG_IGN);
  int status = daemon.run();
  running = nullptr;
  return status;
}

}  // namespace outbox
