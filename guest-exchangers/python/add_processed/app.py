"""`add_processed` in Python: appends a non-null boolean column `processed`,
true on every row; every other column passes through untouched."""

from mallard_exchanger import Column, Exchanger, Field, InvalidInput, bool_, export


class AddProcessed(Exchanger):
    name, version = "add_processed", "1.0.0"
    description = "appends a boolean column `processed` = true to every batch"
    stateless = True

    def open(self, schema, params):
        if "processed" in schema:
            raise InvalidInput("input already has a `processed` column")
        return schema.append(Field("processed", bool_, nullable=False))

    def push(self, batch):
        done = Column.constant(bool_, True, batch.num_rows)
        return [batch.append(self.output.fields[-1], done)]


Exchange = export(AddProcessed)
