// The result schema of one statement with its parameter values bound, without
// running it.
//
// DuckDB types `SELECT ? + 1` only once it knows the parameter's type: a
// prepared statement reports no result type before that, and DuckDB rebinds at
// execution. Flight SQL clients (the ADBC driver) ask for the schema after
// binding and refuse a stream of any other schema, so this binds the statement
// with the values in DuckDB's planner, as execution's rebind does, and converts
// the types with the connection's Arrow settings, as the result stream does.
// Binding is read-only; nothing is optimised, planned physically or executed.

#include "duckdb.h"
#include "duckdb.hpp"
#include "duckdb/common/arrow/arrow_converter.hpp"
#include "duckdb/planner/planner.hpp"

#include "shim_message.hpp"


// Fills `out` with the result schema of `sql` (exactly one statement) bound with
// `count` positional `values` ($1 first; duckdb_value handles, borrowed).
// Returns nullptr on success, else a message freed with mallard_free_message.
extern "C" char *mallard_bound_result_schema(duckdb_connection connection, const char *sql, duckdb_value *values,
                                             uint64_t count, ArrowSchema *out) {
	try {
		auto conn = reinterpret_cast<duckdb::Connection *>(connection);
		auto statements = conn->ExtractStatements(std::string(sql));
		if (statements.size() != 1) {
			return mallard::copy_message("a schema lookup takes exactly one statement");
		}
		auto statement = std::move(statements[0]);
		auto &context = *conn->context;
		duckdb::vector<duckdb::LogicalType> types;
		duckdb::vector<std::string> names;
		context.RunFunctionInTransaction([&]() {
			duckdb::Planner planner(context);
			for (uint64_t i = 0; i < count; i++) {
				auto value = reinterpret_cast<duckdb::Value *>(values[i]);
				planner.parameter_data.emplace(duckdb::Identifier(std::to_string(i + 1)),
				                               duckdb::BoundParameterData(*value));
			}
			planner.CreatePlan(std::move(statement));
			types = planner.types;
			for (auto &name : planner.names) {
				names.push_back(name.GetIdentifierName());
			}
		});
		auto properties = context.GetClientProperties();
		duckdb::ArrowConverter::ToArrowSchema(out, types, names, properties);
		return nullptr;
	} catch (std::exception &e) {
		return mallard::copy_message(duckdb::ErrorData(e).Message());
	} catch (...) {
		return mallard::copy_message("unknown DuckDB error while binding");
	}
}
