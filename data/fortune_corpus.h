// The fortune-cookie corpus that launch/setup.sh installs from Debian packages (fortunes,
// fortunes-de, fortunes-zh, ...): records labelled with their file (category) and language.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "data/text_record.h"

namespace switchyard {

/// A folder (read: the regular files directly in it) or one file, under the corpus root.
struct FortuneSource {
  std::string language;  ///< ISO 639-1 code, the records' language label
  std::string path;      ///< relative to FortuneCorpusOptions::root
  std::string package;   ///< the Debian package that installs it, for the error message
};

/// Debian 12's layout: en (the top folder), de, es, it, ru, zh (chinese, song100, tang300),
/// pl, cs, sk (cs/klasik-sk), pt (brasil), bg, eo, ga. Offensive files (off/ folders) are not
/// read, as folders are read without their subfolders.
std::vector<FortuneSource> debian_fortune_sources();

struct FortuneCorpusOptions {
  std::string root = "/usr/share/games/fortunes";
  std::vector<FortuneSource> sources = debian_fortune_sources();
  bool drop_duplicates = true;  ///< a text seen before (in any language) is left out
};

/// Every record of every source, in reading order: sources in order, a folder's files sorted by
/// name. A folder source reads its regular files that are not symlinks, *.dat (strfile indexes)
/// or *.u8 (Debian's compatibility links), nor named by another source. A file's category is its
/// name less a ".fortunes" suffix. Throws ConfigError naming the package for a missing source and
/// Error naming file:line for text that is not UTF-8.
///   usage: auto records = read_fortune_corpus({});
std::vector<TextRecord> read_fortune_corpus(const FortuneCorpusOptions& options);

/// The cleaning applied to a whole file before it is cut into records: ANSI CSI escape sequences
/// removed (the Chinese files colour their titles); a backspace deletes the character before it
/// unless that is a newline (overstrike, used in old files for bold and underline); every other
/// C0 control except tab and newline, and DEL, removed (this also turns CRLF into LF).
std::string clean_fortune_text(std::string_view text);

/// Records of one cleaned file: the lines up to a line holding only "%", with leading newlines
/// and trailing spaces, tabs and newlines stripped; empty records dropped.
std::vector<std::string> parse_fortune_records(std::string_view cleaned);

}  // namespace switchyard
