#pragma once
// The command line both binaries share: --config FILE, --check-config FILE, --version, --help.

#include <optional>
#include <string>
#include <vector>

#include "common/ConfigSupport.h"

namespace outbox {

struct CommandLine {
  std::string configPath;
  bool checkOnly = false;  // --check-config: validate, print the verdict, exit
};

// Parses argv. Returns the exit status when the program is done already (--help, --version: 0; a bad argument:
// 2, with the usage on stderr), nullopt when it should go on with `out`.
std::optional<int> parseCommandLine(int argc, char** argv, const char* program, const char* usage, CommandLine& out);

// After loading the config: prints every issue (exit 2), or for --check-config the verdict (exit 0).
// nullopt: the config is valid and the program should run.
template <typename Config>
std::optional<int> finishConfigCheck(const ConfigLoadResult<Config>& loaded, const CommandLine& commandLine) {
  return finishConfigCheck(loaded.ok(), loaded.issues, commandLine);
}
std::optional<int> finishConfigCheck(bool ok, const std::vector<ConfigIssue>& issues, const CommandLine& commandLine);

}  // namespace outbox
