#include "common/Redaction.h"

#include <fmt/format.h>
#include <libpq-fe.h>

#include <algorithm>
#include <cctype>
#include <memory>
#include <vector>

namespace outbox {

namespace {

// libpq's parse errors quote what they could not parse (`invalid percent-encoded token: "pa%zz"`), which may be
// the password. Everything from the first double quote to the last is left out.
std::string withoutQuotedText(std::string_view message) {
  while (!message.empty() && message.back() == '\n') message.remove_suffix(1);
  size_t first = message.find('"');
  if (first == std::string_view::npos) return std::string(message);
  return fmt::format("{}\"...\"{}", message.substr(0, first), message.substr(message.rfind('"') + 1));
}

// A value as libpq's key=value syntax writes it: in single quotes, with \' and \\, when it must be.
std::string conninfoValue(std::string_view value) {
  if (!value.empty() && value.find_first_of(" \t\n\r\f\v'\\") == std::string_view::npos) return std::string(value);
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

// libpq takes a URI's user info up to the first '@' or '/', so a password with a raw '@' or '/' (they must be
// written %40 and %2F) would show in the host, port or dbname.
bool hasAmbiguousUserInfo(std::string_view conninfo) {
  if (conninfo.rfind("postgresql://", 0) != 0 && conninfo.rfind("postgres://", 0) != 0) return false;
  std::string_view rest = conninfo.substr(conninfo.find("://") + 3);
  rest = rest.substr(0, rest.find('?'));
  size_t at = rest.rfind('@');
  return at != std::string_view::npos && rest.find_first_of("@/") != at;
}

}  // namespace

std::string redactConninfo(std::string_view conninfo) {
  if (hasAmbiguousUserInfo(conninfo)) {
    return "<not shown: libpq would not end the user info at the URI's last '@'; write '@' and '/' in a password as "
           "%40 and %2F>";
  }
  char* error = nullptr;
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> options(
      PQconninfoParse(std::string(conninfo).c_str(), &error), &PQconninfoFree);
  if (options == nullptr) {
    std::string reason = error == nullptr ? "out of memory" : withoutQuotedText(error);
    PQfreemem(error);
    return fmt::format("<could not be parsed: {}>", reason);
  }
  std::vector<std::string> pairs;
  for (const PQconninfoOption* option = options.get(); option->keyword != nullptr; ++option) {
    if (option->val == nullptr) continue;
    // dispchar "*": libpq's mark for a secret to hide in a dialog (password, sslpassword).
    bool secret = option->dispchar != nullptr && option->dispchar[0] == '*';
    pairs.push_back(fmt::format("{}={}", option->keyword, secret ? kRedacted : conninfoValue(option->val)));
  }
  return fmt::format("{}", fmt::join(pairs, " "));
}

bool isSecretKafkaProperty(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  return lower.find("password") != std::string::npos || lower.find("secret") != std::string::npos ||
         lower == "sasl.oauthbearer.config" || lower == "ssl.key.pem";
}

}  // namespace outbox
