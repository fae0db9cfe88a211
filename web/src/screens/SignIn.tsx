import { type FormEvent, useState } from 'react';
import { auth } from '../api/auth';
import { anonymousRequest } from '../api/graphql';
import { useFocusOnArrival } from '../focus';
import { SignInDocument, SignUpDocument } from '../gql/graphql';

/** Sign in, or sign up with the same two fields. */
export function SignIn() {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const heading = useFocusOnArrival<HTMLHeadingElement>();

  const submit = async (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    if (busy) return;
    const form = new FormData(event.currentTarget);
    const submitter = (event.nativeEvent as SubmitEvent).submitter as HTMLButtonElement | null;
    const variables = { email: String(form.get('email')), password: String(form.get('password')) };
    setBusy(true);
    setError(null);
    try {
      const result =
        submitter?.value === 'signUp'
          ? (await anonymousRequest(SignUpDocument, variables)).signUp
          : (await anonymousRequest(SignInDocument, variables)).signIn;
      if (result.__typename === 'AuthSession') auth.accept(result);
      else setError(result.message);
    } catch (failure) {
      setError((failure as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main className="narrow">
      <h1 ref={heading} tabIndex={-1}>
        Kiln
      </h1>
      <p className="muted">Describe an app, watch it being built, keep every version.</p>
      <form className="card stack" onSubmit={(event) => void submit(event)}>
        <label>
          Email
          <input name="email" type="email" autoComplete="username" required />
        </label>
        <label>
          Password
          <input name="password" type="password" autoComplete="current-password" required minLength={8} />
        </label>
        {error && (
          <p role="alert" className="error">
            {error}
          </p>
        )}
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
