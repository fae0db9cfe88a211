// The reasons a ValidationError gives for its fields (`fieldErrors`), shown under each field:
// the field is marked invalid and described by its reason, so a screen reader says both when
// it reaches the field. Reasons for fields the form does not have go to its alert instead.

export interface FieldProblem {
  path: readonly string[];
  message: string;
}

export interface FieldErrors {
  /** The first reason for each field of the form, by name (the first segment of the path). */
  byField: Partial<Record<string, string>>;
  /** Reasons for no field of the form. */
  other: string[];
}

export const noFieldErrors: FieldErrors = { byField: {}, other: [] };

/** Sorts the reasons by field: `labels` names the fields of the form. */
export function fieldErrorsOf(problems: readonly FieldProblem[], labels: Readonly<Record<string, string>>): FieldErrors {
  const result: FieldErrors = { byField: {}, other: [] };
  for (const { path, message } of problems) {
    const field = path[0];
    if (field !== undefined && Object.hasOwn(labels, field)) result.byField[field] ??= message;
    else result.other.push(message);
  }
  return result;
}

/** The form's alert, when it failed: the message, the reasons for no field of the form, and which fields to look at. */
export function FormAlert({ message, errors, labels }: { message: string | null; errors: FieldErrors; labels: Readonly<Record<string, string>> }) {
  if (!message) return null;
  const fields = Object.keys(errors.byField).map((field) => labels[field] ?? field);
  return (
    <p role="alert" className="error">
      {[message, ...errors.other, fields.length > 0 ? `Check ${fields.join(' and ')}.` : ''].filter(Boolean).join(' ')}
    </p>
  );
}

/** The attributes of an input whose reason (if any) is shown by `<FieldError id={id} …>`. */
export function describedBy(id: string, message: string | undefined) {
  return message ? { 'aria-invalid': true, 'aria-describedby': `${id}-error` } : {};
}

export function FieldError({ id, message }: { id: string; message: string | undefined }) {
  if (!message) return null;
  return (
    <p id={`${id}-error`} className="error field-error">
      {message}
    </p>
  );
}
