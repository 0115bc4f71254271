#pragma once
// What the config fuzzers set up once: the ${VAR}s the seed configs use, so a seed parses as it does in a pod
// (the values are made up; nothing connects anywhere).
//
// Safe to fuzz: the loaders only ever open files to read them (common/ConfigSupport.cpp, fopen "rbe", for
// password_file and secret files): a fuzz input can make them read a file, never write or delete one. A read
// that never ends (a FIFO, /dev/zero) would be a libFuzzer timeout or out-of-memory report, bounded by -timeout
// and -rss_limit_mb.

#include <cstdlib>

namespace outbox::fuzz {

inline void prepareConfigEnvironment() {
  setenv("PGURL", "postgresql://relay@localhost:5432/app", 1);         // examples/*.toml
  setenv("KAFKA_BOOTSTRAP", "localhost:9092", 1);                      // examples/*.toml
  setenv("PGHOST", "db.example", 1);                                   // helm/outbox-relay/ci/ha-values.yaml
  setenv("READ_MODEL_URL", "postgresql://sink@localhost:5432/rm", 1);  // helm/outbox-relay/ci/sinks-values.yaml
  for (const char* name : {"ORDER_DB_URL", "CUSTOMER_DB_URL", "VIEW_DB_URL"}) {  // examples/saga/*.toml
    setenv(name, "postgresql://service@localhost:5432/saga", 1);
  }
}

}  // namespace outbox::fuzz
