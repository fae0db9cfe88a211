import { type FormEvent, useId, useState } from 'react';
import { auth } from '../api/auth';
import { anonymousRequest } from '../api/graphql';
import { describedBy, FieldError, type FieldErrors, fieldErrorsOf, FormAlert, noFieldErrors } from '../components/FieldError';
import { useFocusOnArrival } from '../focus';
import { SignInWithFieldErrorsDocument, SignUpWithFieldErrorsDocument } from '../gql/graphql';

/** The form's fields, by the name a ValidationError's path gives them. */
const LABELS = { email: 'Email', password: 'Password' };

/** Sign in, or sign up with the same two fields; `ended`: the server ended the session, which the form says until it is sent. */
export function SignIn({ ended = false }: { ended?: boolean }) {
  const [endedShown, setEndedShown] = useState(ended);
  const [error, setError] = useState<string | null>(null);
  const [fieldErrors, setFieldErrors] = useState<FieldErrors>(noFieldErrors);
  const [busy, setBusy] = useState(false);
  const heading = useFocusOnArrival<HTMLHeadingElement>();
  const id = useId();

  const submit = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    if (busy) return;
    const form = new FormData(event.currentTarget);
    const submitter = (event.nativeEvent as SubmitEvent).submitter as HTMLButtonElement | null;
    const variables = { email: String(form.get('email')), password: String(form.get('password')) };
    setBusy(true);
    setEndedShown(false);
    setError(null);
    setFieldErrors(noFieldErrors);
    try {
      const result =
        submitter?.value === 'signUp'
          ? (await anonymousRequest(SignUpWithFieldErrorsDocument, variables)).signUp
          : (await anonymousRequest(SignInWithFieldErrorsDocument, variables)).signIn;
      if (result.__typename === 'AuthSession') return auth.accept(result);
      setError(result.message);
      if (result.__typename === 'ValidationError') setFieldErrors(fieldErrorsOf(result.fieldErrors, LABELS));
    } catch (failure) {
      setError((failure as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="narrow">
      {/* The focus arrives here: the heading's description says why the tab signed out (a status mounted with its text is not announced). */}
      <h1 ref={heading} tabIndex={-1} aria-describedby={endedShown ? `${id}-ended` : undefined}>
        Kiln
      </h1>
      <p className="muted">Describe an app, watch it being built, keep every version.</p>
      <form className="card stack" onSubmit={(event) => void submit(event)}>
        {endedShown && (
          <p id={`${id}-ended`} role="status" className="banner">
            Your session ended. Sign in again.
          </p>
        )}
        <div className="field">
          <label>
            Email
            <input name="email" type="email" autoComplete="username" required {...describedBy(`${id}-email`, fieldErrors.byField.email)} />
          </label>
          <FieldError id={`${id}-email`} message={fieldErrors.byField.email} />
        </div>
        <div className="field">
          <label>
            Password
            <input
              name="password"
              type="password"
              autoComplete="current-password"
              required
              minLength={8}
              {...describedBy(`${id}-password`, fieldErrors.byField.password)}
            />
          </label>
          <FieldError id={`${id}-password`} message={fieldErrors.byField.password} />
        </div>
        <FormAlert message={error} errors={fieldErrors} labels={LABELS} />
        <div className="row">
          <button type="submit" name="action" value="signIn" aria-disabled={busy}>
            Sign in
          </button>
          <button type="submit" name="action" value="signUp" className="secondary" aria-disabled={busy}>
            Sign up
          </button>
        </div>
      </form>
    </main>
  );
}
