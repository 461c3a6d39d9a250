// Atomic file writes, so that a reader never sees a half-written result. The text goes to a
// temporary file beside the target, named with the process id so that concurrent writers never
// share one, and a rename puts it in place. On failure the target is left as it was.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "miras/core/error.hpp"

namespace miras {

/// Replaces the file at `path` with `text` atomically. Raises InputError naming the file on failure.
inline void write_file_atomically(const std::filesystem::path& path, const std::string& text) {
    namespace fs = std::filesystem;
    const fs::path temporary = path.string() + ".tmp-" + std::to_string(::getpid());
    {
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        if (!out) throw InputError("cannot write '" + temporary.string() + "'; check that the folder exists and is writable");
        out << text;
        out.flush();
        if (!out) {
            out.close();
            std::error_code ignored;
            fs::remove(temporary, ignored);
            throw InputError("writing '" + temporary.string() + "' failed; check the free space of its disk");
        }
    }
    std::error_code error;
    fs::rename(temporary, path, error);
    if (error) {
        std::error_code ignored;
        fs::remove(temporary, ignored);
        throw InputError("cannot rename '" + temporary.string() + "' to '" + path.string() + "': " + error.message());
    }
}

}  // namespace miras
