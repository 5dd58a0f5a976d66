// Inserts an Arrow C stream into a table through DuckDB's own Arrow scan, on the
// caller's connection and inside its current transaction.
//
// The C API can only scan an Arrow stream through a catalog view
// (duckdb_arrow_scan), which a file database writes to its WAL and cannot
// serialize; DuckDB's C++ relation API takes the stream as the scan's bind info
// instead, so nothing reaches the catalog and the insert runs DuckDB's parallel
// Arrow scan and insert pipeline, in memory or into a file alike.

#include "duckdb.h"
#include "duckdb.hpp"
#include "duckdb/common/arrow/arrow_wrapper.hpp"
#include "duckdb/function/table/arrow.hpp"

#include "shim_message.hpp"

#include <cstdlib>

namespace {

// Hands DuckDB the caller's stream; the caller keeps ownership of the stream,
// DuckDB owns each schema and array it is given.
class BorrowedStream : public duckdb::ArrowScanFactory {
public:
	explicit BorrowedStream(ArrowArrayStream &stream_p) : stream(stream_p) {
	}

	void GetSchema(ArrowSchema &schema) override {
		if (stream.get_schema(&stream, &schema) != 0) {
			throw duckdb::InvalidInputException("the put stream has no schema");
		}
	}

	duckdb::unique_ptr<duckdb::ArrowArrayStreamWrapper> ProduceStream(duckdb::ArrowStreamParameters &) override {
		auto result = duckdb::make_uniq<duckdb::ArrowArrayStreamWrapper>();
		result->arrow_array_stream = stream;
		result->arrow_array_stream.release = NoRelease;
		return result;
	}

private:
	static void NoRelease(ArrowArrayStream *stream) {
		stream->release = nullptr;
	}

	ArrowArrayStream &stream;
};

} // namespace

// Appends every batch of `stream` to `table` (one unqualified name, in the default
// schema). Returns nullptr and sets `rows` on success, else a message the caller
// frees with mallard_free_message.
extern "C" char *mallard_insert_arrow_stream(duckdb_connection connection, ArrowArrayStream *stream,
                                             const char *table, uint64_t *rows) {
	try {
		auto conn = reinterpret_cast<duckdb::Connection *>(connection);
		auto source = conn->TableFunction("arrow_scan", {}, {}, duckdb::make_shared_ptr<BorrowedStream>(*stream));
		auto result = source->InsertRel(duckdb::Identifier::InvalidSchema(), duckdb::Identifier(std::string(table)))
		                  ->Execute();
		if (result->HasError()) {
			return mallard::copy_message(result->GetError());
		}
		auto chunk = result->Fetch();
		*rows = chunk && chunk->size() > 0 ? chunk->GetValue(0, 0).GetValue<int64_t>() : 0;
		return nullptr;
	} catch (std::exception &e) {
		return mallard::copy_message(duckdb::ErrorData(e).Message());
	} catch (...) {
		return mallard::copy_message("unknown DuckDB error during ingest");
	}
}

extern "C" void mallard_free_message(char *message) {
	std::free(message);
}
