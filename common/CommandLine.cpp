#include "common/CommandLine.h"

#include <cstdio>

namespace outbox {

std::optional<int> parseCommandLine(int argc, char** argv, const char* program, const char* usage, CommandLine& out) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(usage, stdout);
      return 0;
    }
    if (arg == "--version") {
      std::printf("%s %s\n", program, OUTBOX_RELAY_VERSION);
      return 0;
    }
    if ((arg == "--config" || arg == "--check-config") && i + 1 < argc) {
      out.checkOnly = arg == "--check-config";
      out.configPath = argv[++i];
      continue;
    }
    std::fprintf(stderr, "%s: unknown or incomplete argument \"%s\"\n\n%s", program, arg.c_str(), usage);
    return 2;
  }
  if (out.configPath.empty()) {
    std::fprintf(stderr, "%s: --config FILE is required\n\n%s", program, usage);
    return 2;
  }
  return std::nullopt;
}

std::optional<int> finishConfigCheck(bool ok, const std::vector<ConfigIssue>& issues, const CommandLine& commandLine) {
  if (!ok) {
    for (const auto& issue : issues) std::fprintf(stderr, "%s\n", issue.toString().c_str());
    return 2;
  }
  if (commandLine.checkOnly) {
    std::printf("%s: valid\n", commandLine.configPath.c_str());
    return 0;
  }
  return std::nullopt;
}

}  // namespace outbox
