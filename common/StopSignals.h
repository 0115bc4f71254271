#pragma once
// For main(): runs a daemon's event loop until it returns, with SIGTERM and SIGINT asking it to stop (its
// requestStop() must be async-signal-safe) and SIGPIPE ignored (a closed socket is an error return, not a death).
// An exception that escapes the loop is a bug: it is logged and the process exits with kExitInternalError instead
// of aborting.

#include <signal.h>

#include <exception>

#include "common/Log.h"

namespace outbox {

// Both binaries' exit status for an internal error (documented in their --help and README).
inline constexpr int kExitInternalError = 5;

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
  int status = kExitInternalError;
  try {
    status = daemon.run();
  } catch (const std::exception& e) {
    log::error("internal error: {}; stopping (exit status {})", e.what(), kExitInternalError);
  }
  running = nullptr;
  return status;
}

}  // namespace outbox
