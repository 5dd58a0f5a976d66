// Error messages the C++ shims hand to Rust: malloc'd copies, freed by
// mallard_free_message (arrow_insert.cpp) through raw.rs's shim_outcome.

#pragma once

#include <cstdlib>
#include <cstring>
#include <string>

namespace mallard {

inline char *copy_message(const std::string &message) {
	auto copy = static_cast<char *>(std::malloc(message.size() + 1));
	if (copy) {
		std::memcpy(copy, message.c_str(), message.size() + 1);
	}
	return copy;
}

} // namespace mallard
